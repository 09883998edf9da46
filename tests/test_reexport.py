"""Re-exports: the same content is recognised, copies are one series, changes a new version."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from agent.config import Config
from agent.errors import SeriesProblem
from agent.main import Agent
from agent.reexport import plan_export, source_digest
from agent.series import FileState
from agent.vocab import ProblemCode, SeriesState
from tests.conftest import manifests, write_series
from tests.waiting import wait_until

KEY = b"k" * 32



def states(files: list[Path]) -> dict[str, FileState]:
    return {str(f): FileState(f.stat().st_size, f.stat().st_mtime_ns) for f in files}


def rewrite(path: Path, change: Callable[[pydicom.Dataset], None] | None = None) -> None:
    """Write ``path`` again, as a viewer exporting over an earlier export does."""
    ds = pydicom.dcmread(path)
    if change is not None:
        change(ds)
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)


def flip_a_pixel(ds: pydicom.Dataset) -> None:
    data = bytearray(ds.PixelData)
    data[100] ^= 0x01
    ds.PixelData = bytes(data)


# -- the digest and the plan --------------------------------------------------------------

def test_source_digest_ignores_file_meta_and_sees_header_and_pixels(tmp_path: Path) -> None:
    [f] = write_series(tmp_path / "a", 1)
    uid, digest = source_digest(f)
    assert uid == str(pydicom.dcmread(f).SOPInstanceUID)

    def meta(ds: pydicom.Dataset) -> None:
        ds.file_meta.ImplementationVersionName = "OTHER_VIEWER"
        ds.file_meta.SourceApplicationEntityTitle = "WS2"

    rewrite(f, meta)
    assert source_digest(f) == (uid, digest), "file meta must not count as a change"
    rewrite(f, lambda ds: setattr(ds, "SeriesDescription", "edited"))
    header_changed = source_digest(f)[1]
    assert header_changed != digest
    rewrite(f, flip_a_pixel)
    assert source_digest(f)[1] not in (digest, header_changed)


def test_deflated_files_take_the_slow_path(tmp_path: Path) -> None:
    [f] = write_series(tmp_path / "a", 1)
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, enforce_file_format=True)
    uid, digest = source_digest(deflated)
    assert uid == str(ds.SOPInstanceUID) and source_digest(deflated) == (uid, digest)
    assert digest != source_digest(f)[1]
    with pytest.raises(ValueError):
        source_digest(_write(tmp_path / "junk.dcm", b"not dicom at all" * 20))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "dicom"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the vendor corpus (../shared/corpus) is absent")
@pytest.mark.parametrize("series", ["dcm_qa_ge/05_3D_Ax_T1_MP_RAGE_R22",
                                    "dcm_qa_xa30/7_func-bold_task-fa_run-1",
                                    "dcm_qa_philips/fmri", "dcm_qa_mosaic/ep2d_Asc_2"])
def test_real_exports_copied_twice_are_one_series(series: str, tmp_path: Path) -> None:
    files = sorted(p for p in (CORPUS / series).iterdir() if p.name != "LICENSE")
    for f in files[:20]:  # the quick reader finds the same UID as pydicom
        assert source_digest(f)[0] == str(pydicom.dcmread(f, stop_before_pixels=True)
                                           .SOPInstanceUID)
    shutil.copytree(CORPUS / series, tmp_path / "copy")
    both = files + sorted(p for p in (tmp_path / "copy").iterdir() if p.name != "LICENSE")
    plan = plan_export(states(both), KEY, {})
    assert len(plan.chosen) == len(files) and plan.duplicates == len(files)
    assert plan.conflicts == 0


def test_plan_merges_copies_and_recognises_what_was_delivered(tmp_path: Path) -> None:
    first = write_series(tmp_path / "a", 3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    both = first + sorted((tmp_path / "b").glob("*.dcm"))
    plan = plan_export(states(both), KEY, {})
    assert len(plan.chosen) == 3 and plan.duplicates == 3 and plan.conflicts == 0
    assert len(plan.added) == 3 and not plan.nothing_new
    known = {i.uid_hash: (i.content_hash, 7) for i in plan.chosen}
    again = plan_export(states(both), KEY, known, {7: 1})
    assert again.nothing_new and again.repeats == 7 and again.unchanged == 3
    rewrite(first[1], flip_a_pixel)
    changed = plan_export(states(both), KEY, known, {7: 1})
    assert not changed.nothing_new and changed.conflicts == 1
    assert [Path(i.path) for i in changed.changed] == [first[1]]  # the newer copy wins
    doc = changed.changes({i.path: f"{n}.dcm" for n, i in enumerate(changed.chosen)})
    assert doc["since_version"] == 1 and doc["unchanged"] == 2 and len(doc["changed"]) == 1


# -- the agent ------------------------------------------------------------------------------


def test_same_folder_other_folder_one_changed_gives_nothing_nothing_one_version(
        started_agent: Agent, export_dir: Path, outbox_dir: Path) -> None:
    agent = started_agent
    files = write_series(export_dir / "first", 4)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    ledger = agent.ledger

    # 1. The viewer exports the same series again over the first export. (On a busy
    # machine its files may be taken in two batches: each is recognised on its own.)
    for f in files:
        rewrite(f)
    assert wait_until(lambda: ledger.reexport_count(0) >= 1, 20)
    assert wait_until(lambda: agent.status().waiting == (), 10)
    after_first = ledger.reexport_count(0)
    # 2. ...and once more, into another folder.
    shutil.copytree(export_dir / "first", export_dir / "second")
    assert wait_until(lambda: ledger.reexport_count(0) > after_first, 20)
    assert wait_until(lambda: agent.status().waiting == (), 10)
    assert len(manifests(outbox_dir)) == 1
    assert ledger.in_state(SeriesState.QUARANTINED) == []
    [row] = ledger.recent(10)
    assert row.version == 1 and row.state == SeriesState.DELIVERED
    [summary] = agent.recent(5)
    times = ledger.reexport_count(0)
    assert f"exported again ({times} times)" in summary.reason
    assert "nothing sent" in summary.reason
    assert agent.status().already_delivered_today == times

    # 3. One instance really changed: one new version, whose manifest says what changed.
    rewrite(files[2], flip_a_pixel)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 2, 30)
    v2 = json.loads(manifests(outbox_dir)[1].read_text()) if manifests(outbox_dir)[
        1].parent.name.endswith(".v2") else json.loads(manifests(outbox_dir)[0].read_text())
    assert v2["version"] == 2 and len(v2["files"]) == 4
    changes = v2["changes"]
    assert changes["since_version"] == 1 and changes["added"] == []
    assert len(changes["changed"]) == 1 and changes["unchanged"] == 3
    assert changes["changed"][0] in {f["path"] for f in v2["files"]}
    assert changes["conflicting_copies"] == 1  # the second folder still holds the old copy
    # The manifest is renamed into place before the ledger records the delivery.
    assert wait_until(lambda: sorted(r.state for r in ledger.recent(10))
                      == ["delivered", "delivered"])
    assert agent.status().quarantined == 0


def test_two_copies_at_once_are_one_series(started_agent: Agent, export_dir: Path,
                                           outbox_dir: Path, tmp_path: Path) -> None:
    agent = started_agent
    write_series(tmp_path / "made", 3)
    shutil.copytree(tmp_path / "made", export_dir / "copy 1")
    shutil.copytree(tmp_path / "made", export_dir / "copy 2")
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    doc = json.loads(manifests(outbox_dir)[0].read_text())
    assert len(doc["files"]) == 3 and "changes" not in doc
    assert agent.status().quarantined == 0


def test_retry_does_not_quarantine_the_same_copy_again(
        started_agent: Agent, export_dir: Path, outbox_dir: Path) -> None:
    agent = started_agent
    files = write_series(export_dir, 3)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    [delivered] = agent.ledger.recent(1)
    # What an earlier agent left: both copies of an export, quarantined as duplicates.
    row = agent.ledger.open_version(delivered.key, [("old-a", 1, 1)])
    qdir = agent.config.paths.quarantine / str(row.id)
    qdir.mkdir(parents=True)
    for n, f in enumerate(files + files):
        shutil.copyfile(f, qdir / f"{n:06d}.dcm")
    agent.pipeline.quarantine(row.id, SeriesProblem(
        "two files of the series share a SOP Instance UID", code=ProblemCode.DUPLICATE))
    assert agent.status().quarantined == 1
    said = agent.retry(row.id)
    after = agent.ledger.get(row.id)
    assert after.state == SeriesState.DELIVERED, said
    assert "identical to version 1" in after.reason and after.location == delivered.location
    assert len(manifests(outbox_dir)) == 1 and not qdir.exists()
    assert agent.status().quarantined == 0


def test_retry_of_a_given_up_export_watches_it_again(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path) -> None:
    agent = Agent(make_config(watch_max_wait_seconds=2.0, watch_stable_seconds=0.3))
    agent.start()
    try:
        files = write_series(export_dir, 3)
        whole = files[1].read_bytes()
        files[1].write_bytes(whole[: len(whole) - 200])  # the viewer never finished it
        assert wait_until(lambda: agent.status().quarantined == 1, 20)
        [row] = agent.ledger.in_state(SeriesState.QUARANTINED)
        assert row.code == ProblemCode.INCOMPLETE
        [summary] = [s for s in agent.recent() if s.id == row.id]
        assert "Export the series again" in summary.action
        # No copy was kept (it was never whole): Retry looks at the export folder again.
        said = agent.retry(row.id)
        assert "looking at the export folder again" in said
        assert wait_until(lambda: len(agent.status().waiting) == 1, 10)
        assert agent.status().waiting[0].files == 3
        # Given up on again: still one series needing a person, not two.
        assert wait_until(lambda: len(agent.ledger.in_state(SeriesState.QUARANTINED)) == 2, 20)
        assert agent.status().quarantined == 1
        files[1].write_bytes(whole)  # exported again, whole this time
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1, 20)
        assert wait_until(lambda: agent.status().quarantined == 0, 5), (
            "the later version resolves the quarantine")
        assert "exported again since" in agent.retry(row.id)
    finally:
        agent.stop()


def test_retry_by_the_same_agent_does_not_keep_the_same_copy_back_again(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path,
        tmp_path: Path) -> None:
    for f in write_series(tmp_path / "made", 2):
        ds = pydicom.dcmread(f)
        ds.BurnedInAnnotation = "YES"  # identity in the pixels: decided by series + settings
        ds.save_as(export_dir / f.name)
    agent = Agent(make_config())
    agent.start()
    try:
        assert wait_until(lambda: agent.status().quarantined == 1)
        [row] = agent.ledger.in_state(SeriesState.QUARANTINED)
        events = len(agent.ledger.audit_rows())
        said = agent.retry(row.id)
        assert said.startswith(f"series {row.id} would be kept back again for the same reason")
        assert "What to do:" in said
        assert agent.ledger.get(row.id).state == SeriesState.QUARANTINED
        assert len(agent.ledger.audit_rows()) == events, "nothing was run again"
    finally:
        agent.stop()
    # After a restart (the settings may have changed), Retry runs for real.
    again = Agent(make_config())
    again.start()
    try:
        assert again.retry(row.id) == f"series {row.id} is being processed again"
        assert wait_until(lambda: again.ledger.get(row.id).state == SeriesState.QUARANTINED
                          and again.ledger.get(row.id).attempts == 2, 20)
    finally:
        again.stop()
    assert manifests(outbox_dir) == []
