"""sltalign.data.gettext_corpus: human-translated UI strings from gettext catalogs (written here with polib)."""

from __future__ import annotations

import polib
import pytest

from sltalign.cli import main
from sltalign.data.gettext_corpus import gettext_pairs, read_catalog, write_parallel


def _catalog(path, entries, *, mo=True):
    cat = polib.POFile()
    cat.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Language": "pt_BR"}
    for e in entries:
        cat.append(e)
    path.parent.mkdir(parents=True, exist_ok=True)
    cat.save_as_mofile(str(path)) if mo else cat.save(str(path))
    return path


def E(msgid, msgstr="", **kw):
    return polib.POEntry(msgid=msgid, msgstr=msgstr, **kw)


@pytest.fixture
def locale_root(tmp_path):
    d = tmp_path / "locale" / "pt_BR" / "LC_MESSAGES"
    _catalog(d / "editor.mo", [
        E("Save the current document", "Salvar o documento atual"),
        E("Could not open %s for reading", "Não foi possível abrir %s para leitura"),  # printf placeholder
        E("Open the {name} file now", "Abrir o arquivo {name} agora"),  # brace placeholder
        E("_Open a recent file", "_Abrir um arquivo recente"),  # accelerator
        E("Show <b>bold</b> text here", "Mostrar texto <b>negrito</b> aqui"),  # markup
        E("Not translated at all yet", ""),  # untranslated
        E("Too short", "Muito curto"),  # 2 words
        E("lower case start is a fragment", "começo minúsculo é um fragmento"),
        E("One file was deleted today", "Um arquivo foi excluído hoje", msgid_plural="%d files were deleted today",
          msgstr_plural={0: "Um arquivo", 1: "%d arquivos"}),  # plural forms: several targets
        E("Print the whole document", "Print the whole document"),  # "translation" equal to the source
        E("Close   the\twindow  please", "Fechar a janela, por favor"),  # tab: an escape in the UI string
    ])  # fmt: skip
    _catalog(
        d / "browser.mo",
        [
            E("Save the current document", "Guardar o documento atual"),  # duplicate English: first domain wins
            E("Reload the page from the network", "Recarregar a página da rede"),
        ],
    )
    _catalog(d / "iso_3166-1.mo", [E("United Republic of Tanzania", "República Unida da Tanzânia")])
    _catalog(d / "notes.po", [
        E("Keep this fuzzy entry out", "Manter esta entrada fora", flags=["fuzzy"]),
        E("Write a new note here", "Escrever uma nova nota aqui"),
    ], mo=False)  # fmt: skip
    return tmp_path / "locale"


def test_keeps_only_speakable_translated_singular_pairs(locale_root):
    pairs = gettext_pairs(locale_root, "pt_BR")
    assert [(p.domain, p.english, p.target) for p in pairs] == [
        # domains sorted (browser first), entries in catalog order (.mo files are sorted by msgid)
        ("browser", "Reload the page from the network", "Recarregar a página da rede"),
        ("browser", "Save the current document", "Guardar o documento atual"),
        ("notes", "Write a new note here", "Escrever uma nova nota aqui"),  # .po read too; the fuzzy entry is not
    ]


def test_domains_and_exclude_select_catalogs(locale_root):
    assert [p.domain for p in gettext_pairs(locale_root, domains=["editor"])] == ["editor"]
    names = gettext_pairs(locale_root, exclude=())
    assert "iso_3166-1" in {p.domain for p in names}  # excluded only by the default pattern list
    with pytest.raises(FileNotFoundError, match=r"no catalog for domain\(s\) \['nope'\]"):
        gettext_pairs(locale_root, domains=["nope"])


def test_bad_input_names_what_is_wrong(locale_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="xx_XX"):
        gettext_pairs(locale_root, "xx_XX")
    bad = tmp_path / "bad.mo"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="bad.mo: not a readable gettext catalog"):
        read_catalog(bad)
    with pytest.raises(ValueError, match="no speakable"):
        gettext_pairs(locale_root, domains=["iso_3166-1"], exclude=(), min_words=10)


def test_write_parallel_is_line_parallel(locale_root, tmp_path):
    pairs = gettext_pairs(locale_root)
    paths = write_parallel(pairs, tmp_path / "txt")
    en = paths["en"].read_text(encoding="utf-8").splitlines()
    pt = paths["pt"].read_text(encoding="utf-8").splitlines()
    src = paths["sources"].read_text().splitlines()
    assert en == [p.english for p in pairs] and pt == [p.target for p in pairs]
    assert src[0] == "line\tdomain" and src[1:] == [f"{i}\t{p.domain}" for i, p in enumerate(pairs, start=1)]
    assert not list((tmp_path / "txt").glob("*.tmp"))


def test_cli_writes_files_the_synth_reads(locale_root, tmp_path, capsys):
    from sltalign.data.synth import load_sentences

    assert main(["data", "gettext", "--root", str(locale_root), "--out", str(tmp_path / "g")]) == 0
    assert "3 pairs from 2 catalogs" in capsys.readouterr().out
    pairs = load_sentences(tmp_path / "g" / "en.txt", translations=tmp_path / "g" / "pt.txt")
    assert pairs[0] == ("Reload the page from the network", "Recarregar a página da rede")
    assert main(["data", "gettext", "--root", str(locale_root), "--locale", "xx_XX", "--out", str(tmp_path / "h")]) == 2
    assert "xx_XX" in capsys.readouterr().err
