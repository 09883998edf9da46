"""One read of each exported file: what the watcher and staging learn from it, and when they
must read the file again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import dicomfiles, reexport, watcher
from agent.exportlook import LookCache, look
from agent.reexport import plan_export, source_digest
from agent.series import FileState
from tests.conftest import write_series

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"


def _state(path: Path) -> FileState:
    st = path.stat()
    return FileState(st.st_size, st.st_mtime_ns)


def test_one_read_gives_series_wholeness_and_the_digest_staging_would_compute(
        tmp_path: Path) -> None:
    files = write_series(tmp_path / "export", 3)
    for f in files:
        found = look(f, tmp_path / "export")
        assert found.header is not None and found.complete is True
        assert found.state == _state(f)
        assert found.digest == source_digest(f), "the digest must be re-export recognition's"


def test_real_files_of_every_vendor_digest_as_source_digest_does() -> None:
    dicom = CORPUS / "dicom"
    files: list[Path] = []
    for vendor in sorted(dicom.iterdir()) if dicom.is_dir() else []:
        files += sorted(vendor.rglob("*.dcm"))[::25][:15]
    if not files:
        pytest.skip(f"the real corpus is not at {CORPUS}")
    compared = 0
    for f in files:
        try:
            found = look(f)
        except OSError:
            continue
        if found.digest is not None:
            assert found.digest == source_digest(f), f"digest differs for corpus file {f.name}"
            compared += 1
    assert compared, "no corpus file was answered by the quick path"


def test_a_file_cut_short_is_not_whole_and_has_no_digest(tmp_path: Path) -> None:
    f = write_series(tmp_path, 1)[0]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    found = look(f)
    assert found.header is not None
    assert found.complete is False and found.digest is None


def test_the_cache_answers_only_for_the_state_the_file_was_read_at(tmp_path: Path) -> None:
    f = write_series(tmp_path, 1)[0]
    cache = LookCache()
    cache.put(str(f), look(f))
    seen = _state(f)
    assert cache.whole(str(f), seen) and str(f) in cache.digests({str(f): seen})
    later = FileState(seen.size, seen.mtime_ns + 1)
    assert not cache.whole(str(f), later), "a changed file must be read again"
    assert cache.digests({str(f): later}) == {}


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    f = write_series(tmp_path, 1)[0]
    cache = LookCache(limit=3)
    found = look(f)
    for i in range(10):
        cache.put(f"{f}-{i}", found)
    assert len(cache) == 3


def test_staging_plans_from_the_digests_read_once(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_series(tmp_path, 4)
    cache = LookCache()
    for f in files:
        cache.put(str(f), look(f))
    states = {str(f): _state(f) for f in files}
    expected = plan_export(states, b"k" * 32, {})

    def no_second_read(*_a: object, **_k: object) -> tuple[str, str]:
        raise AssertionError("a file read at the same state was read again")

    monkeypatch.setattr(reexport, "source_digest", no_second_read)
    plan = plan_export(states, b"k" * 32, {}, digests=cache.digests(states))
    assert [(i.uid_hash, i.content_hash) for i in plan.chosen] == [
        (i.uid_hash, i.content_hash) for i in expected.chosen]


def test_the_watcher_checks_wholeness_from_its_own_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series read whole while it was quiet is handed on without reading every file
    again; a file that changed after it was read is read again."""
    from agent.config import WatchConfig

    export = tmp_path / "export"
    files = write_series(export, 3)
    checked: list[str] = []
    real = dicomfiles.is_complete

    def counting(path: Path, root: Path | None = None) -> bool:
        checked.append(path.name)
        return real(path, root)

    monkeypatch.setattr(watcher, "is_complete", counting)
    ready: list[dict[str, FileState]] = []
    w = watcher.ExportWatcher(WatchConfig(folder=str(export), stable_seconds=0),
                              series_key=lambda st, se: se, path_hash=lambda p: p,
                              handled={}, on_ready=lambda _k, f: ready.append(f),
                              on_expired=lambda _k, _f: None)
    w._full_scan()
    # The last file is rewritten (same bytes, a new mtime) without the watcher hearing of it.
    os.utime(files[-1], ns=(files[-1].stat().st_atime_ns, files[-1].stat().st_mtime_ns + 10**6))
    w.tracker.observe(str(files[-1]), next(iter(w.tracker.pending())).key,
                      _state(files[-1]), 0.0)
    w._check_due()
    assert len(ready) == 1 and len(ready[0]) == 3
    assert checked == [files[-1].name], "only the file changed since it was read is read again"
