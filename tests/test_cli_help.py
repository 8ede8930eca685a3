"""Every flag of the commands that run models says what it does, and `data` lists its sources with a line each."""

from __future__ import annotations

import pytest

from sltalign.cli import _parser


def _subcommands(parser):
    return next(a for a in parser._actions if type(a).__name__ == "ActionSubCommands")


@pytest.mark.parametrize("name", ["translate", "evaluate", "info", "serve"])
def test_every_flag_has_help(name):
    q = _subcommands(_parser())._name_parser_map[name]
    assert [a.dest for a in q._actions if not a.help] == []
    if name != "info":
        assert {"device", "threads"} <= {a.dest for a in q._actions}


def test_data_sources_are_listed_with_descriptions(capsys):
    data = _subcommands(_parser())._name_parser_map["data"]
    sources = _subcommands(data)
    listed = {c.dest: c.help for c in sources._choices_actions}
    assert set(listed) >= {"synth", "kaldi", "how2", "mustc", "covost", "realspeech", "gettext"}
    assert all(listed.values()), listed


def test_train_shows_every_config_key_and_trains_nothing(tmp_path, capsys):
    """``train CONFIG [key=value ...] --show_config``: the preset, the overrides and the defaults of every other
    key, as YAML that loads back into the same config; bad values are named as training would name them."""
    import yaml

    from sltalign.cli import main
    from sltalign.config import TrainConfig, load_config, to_dict

    out = tmp_path / "run"
    assert main(["train", "defaults", "stages.0.lr=0.001", f"out={out}", "--show_config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert set(shown) == set(to_dict(TrainConfig())) and set(shown["model"]) == set(to_dict(TrainConfig().model))
    assert shown["stages"][0]["lr"] == 0.001 and not out.exists()
    (tmp_path / "shown.yaml").write_text(yaml.safe_dump(shown))
    assert to_dict(load_config(tmp_path / "shown.yaml")) == shown
    assert main(["train", "defaults", "log_every=0", "--show_config"]) == 2
    assert "log_every" in capsys.readouterr().err
