"""Progress that suits where it goes (sltalign.progress): a tqdm bar on a terminal or with --progress, rare
plain lines in a log, nothing with TQDM_DISABLE or -q; and -v/-q accepted anywhere on the command line."""

from __future__ import annotations

import pytest

from sltalign import progress
from sltalign.cli import _take_global_flags


@pytest.fixture(autouse=True)
def _auto_mode(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    yield
    progress.set_mode("auto")


def test_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    assert progress.resolve_mode() == "lines"  # pytest's captured stderr is no terminal
    bar = progress.progress_bar(range(5), desc="translate", unit="batch", every=0.0)
    assert list(bar) == list(range(5))
    err = capsys.readouterr().err
    assert "\r" not in err and "translate: 5/5 batch (100%)" in err
    quiet = progress.progress_bar(range(1000), desc="many", every=30.0)
    for _ in quiet:
        pass
    assert capsys.readouterr().err.count("\n") == 1  # one closing line, not a thousand redraws


def test_tqdm_disable_and_quiet_silence_everything(capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    progress.set_mode("bar")  # even an explicit --progress yields to the environment's switch
    assert progress.resolve_mode() == "off"
    with progress.progress_bar(total=3, desc="encoding") as bar:
        bar.update(3)
        bar.set_postfix_str("x", refresh=False)
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("TQDM_DISABLE")
    progress.set_mode("off")
    assert list(progress.progress_bar([1, 2], desc="q")) == [1, 2] and capsys.readouterr().err == ""
    assert list(progress.progress_bar([1, 2], enabled=False)) == [1, 2]


def test_forced_bar_is_tqdm():
    from tqdm.auto import tqdm

    progress.set_mode("bar")
    bar = progress.progress_bar(total=2, desc="x")
    assert isinstance(bar, tqdm)
    bar.close()
    with pytest.raises(ValueError, match="progress mode"):
        progress.set_mode("sometimes")


def test_global_flags_anywhere():
    assert _take_global_flags(["translate", "--model", "m", "a.wav", "-v"]) == (
        ["translate", "--model", "m", "a.wav"],
        {"verbose"},
    )
    assert _take_global_flags(["-q", "info", "--model", "m", "--progress"]) == (["info", "--model", "m"], {"quiet", "progress"})
    assert _take_global_flags(["translate", "--", "-v"]) == (["translate", "--", "-v"], set())  # after --: a file named -v
