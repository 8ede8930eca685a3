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
