"""The command line turns OS failures into one line naming the path (exit 2), never a traceback."""

from __future__ import annotations

import errno
import os

import pytest

import sltalign.commands as commands
from sltalign.cli import main


@pytest.mark.parametrize(
    "exc, expected",
    [
        # case 13: out=/--out naming an existing file (train, evaluate, data synth) was a FileExistsError traceback
        (
            FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), "runs/taken"),
            "runs/taken: File exists; expected a directory or a new path",
        ),
        (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "runs/taken/x"), "runs/taken/x: Not a directory"),
        # case 14 at the command line: a full disk
        (
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/last"),
            "runs/x/last: No space left on device; free some space",
        ),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/root/x"), "/root/x: Permission denied"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(exc, expected, tmp_path, monkeypatch, capsys):
    def fail(args):
        raise exc

    monkeypatch.setattr(commands, "train", fail)
    (tmp_path / "c.yaml").write_text("seed: 0\n")
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"sltalign train: error: {expected}" + err[len(f"sltalign train: error: {expected}") :]
    assert err.count("\n") == 1 and "Traceback" not in err


def test_train_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("seed: 0\n")
    (tmp_path / "taken").write_text("x")
    assert main(["train", str(tmp_path / "c.yaml"), f"out={tmp_path / 'taken'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out: {tmp_path / 'taken'} exists and is not a directory" in err
