"""Config values checked before any model loads: each bad value is one ConfigError naming its key."""

from __future__ import annotations

import pytest

from sltalign.config import ConfigError, load_config


@pytest.mark.parametrize(
    "overrides, message",
    [
        # case 8: a non-numeric list index said "invalid literal for int() with base 10: 'x'"
        (["stages.x.steps=3"], "override stages.x.steps: stages is a list; expected an index 0..0 there, got 'x'"),
        # case 9: an index past the end silently inserted default stages
        (["stages.2.steps=3"], "override stages.2.steps: stages has indexes 0..0"),
        (["stages=[]", "stages.0.steps=3"], "override stages.0.steps: stages has no items"),
        # cases 10 and 11: ZeroDivisionError after the models loaded; negative losses in metrics.csv
        (["log_every=0"], "log_every: expected an integer >= 1, got 0"),
        (["log_every=-3"], "log_every: expected an integer >= 1, got -3"),
        (["eval_every=-1"], "eval_every: expected an integer >= 0 (0: never evaluate periodically), got -1"),
        (["save_every=-5"], "save_every: expected an integer >= 0"),
        (["grad_accum=0"], "grad_accum: expected an integer >= 1"),
        (["data.batch_size=0"], "data.batch_size: expected an integer >= 1"),
        # case 12: "cannot convert float NaN to integer"
        (["stages.0.max_minutes=nan"], "stages.0.max_minutes: expected a finite number, got nan"),
        (["stages.0.lr=.nan"], "stages.0.lr: expected a finite number, got nan"),
        (["time_budget_minutes=.inf"], "time_budget_minutes: expected a finite number, got inf"),
        (["stages.0.max_minutes=-1"], "stages.0.max_minutes: expected a number of minutes >= 0"),
        (["model.connector_args={dropout: .nan}"], "model.connector_args.dropout: expected a finite number"),
        (["stages=3"], "stages: expected a list of stage mappings, got 3"),
        (["stages.0=5"], "stages.0: expected a mapping"),
        (["model.prompt=[a"], "override model.prompt: the value '[a' is not valid YAML"),
        (["data..batch_size=1"], "override 'data..batch_size': expected a dotted key"),
        (["label_smoothing=1.5"], "label_smoothing: expected a number in [0, 1)"),
        (["model.phone_search={bem: 4}"], "model.phone_search: search: unknown option(s) ['bem']"),
        (["model.phone_search.lm_weight=-1"], "model.phone_search: search.lm_weight: expected >= 0, got -1"),
        (["model.phone_search.beam=two"], "model.phone_search: search.beam: expected an integer >= 0, got 'two'"),
    ],
)
def test_bad_values_are_named_before_models_load(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_existing_indexes_and_whole_lists_still_work():
    cfg = load_config(None, ["stages.0.steps=3", "stages=[{name: a}, {name: b}]", "stages.1.steps=7", "log_every=1"])
    assert [s.steps for s in cfg.stages] == [1000, 7] and cfg.stages[1].name == "b"
    assert load_config(None, ["eval_every=0", "save_every=0"]).eval_every == 0  # 0: never


def test_cli_config_errors_are_one_line(tmp_path, capsys):
    from sltalign.cli import main

    (tmp_path / "c.yaml").write_text("seed: 1\n")
    assert main(["train", str(tmp_path / "c.yaml"), "stages.x.steps=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages.x.steps" in err and "Traceback" not in err


# --- property: random key=value overrides give a config or a ConfigError, nothing else -----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KEYS = [
    "seed",
    "log_every",
    "eval_every",
    "out",
    "stages",
    "stages.0",
    "stages.0.steps",
    "stages.1.lr",
    "stages.x",
    "stages.0.max_minutes",
    "stages.0.objectives",
    "stages.0.objectives.ctc",
    "model",
    "model.ctc",
    "model.prompt",
    "model.connector_args",
    "model.connector_args.d",
    "model.translator_kwargs",
    "data",
    "data.batch_size",
    "data.max_duration",
    "augment",
    "max_piece_seconds",
    "time_budget_minutes",
    "label_smoothing",
]
_VALUES = [
    "0",
    "-3",
    "1",
    "3",
    "1e-3",
    "1e400",
    "nan",
    ".nan",
    "-.inf",
    "true",
    "null",
    "",
    "x",
    "[a",
    "[1, 2]",
    "{a: 1}",
    "{1: 2}",
    "[{steps: 3}]",
    "[]",
    "{}",
    "'",
    "{ctc: 1.0}",
    "[{}, 5]",
    "{[1]: 2}",
    "!!python/object:os.system x",
]


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(
        st.one_of(
            st.builds(lambda k, v: f"{k}={v}", st.sampled_from(_KEYS), st.sampled_from(_VALUES)),
            st.builds(lambda k, v: f"{k}={v}", st.text(max_size=12), st.text(max_size=12)),
            st.text(max_size=16),
        ),
        max_size=4,
    )
)
def test_random_overrides_give_a_config_or_a_config_error(items):
    try:
        cfg = load_config(None, items)
    except ConfigError as e:
        assert str(e)
        return
    assert cfg.log_every >= 1 and all(s.max_minutes >= 0 for s in cfg.stages)
