"""``[results]``: off by default, clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.paths import AgentPaths


def _load(tmp_path: Path, text: str) -> object:
    f = tmp_path / "c.toml"
    f.write_text(text)
    return load_config(f, machine_file=tmp_path / "none.toml", paths=AgentPaths.under(tmp_path))


def test_off_by_default(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg.results.enabled is False and cfg.results.container == "results"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "words"), [
    ('[results]\npacs = "PACS@host"\n', "[results.pacs] must look like AE@host:port"),
    ('[results]\npacs = "WAYTOOLONGAETITLE17@h:104"\n', "[results.pacs]"),
    ("[results]\npoll_seconds = 0\n", "[results.poll_seconds] must be greater than 0"),
    ('[results]\nenabled = true\nfolder = "/r"\n', 'needs [target] kind = "azure"'),
    ('[target]\nkind = "azure"\n[results]\nenabled = true\n', "needs a folder or a pacs"),
    ('[results]\nfolders = "/r"\n', "unknown key 'folders' in [results]"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        _load(tmp_path, text)
    assert words in str(exc.value) and "c.toml" in str(exc.value)


def test_a_good_section(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[target]\nkind = "azure"\n[results]\nenabled = true\n'
                          'folder = "/r"\npacs = "PACS_1@pacs.local:11112"\n')
    assert cfg.results.pacs == "PACS_1@pacs.local:11112"  # type: ignore[attr-defined]
