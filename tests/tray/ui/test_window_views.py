"""What the Recent activity window tells a clinician, on a real display with a real tray.

The quarantined row names the export (patient, description, scan date, folder: read
locally at display time) - read back from the screen with Tesseract - and that identity
is in no ledger row, log line or manifest; the waiting row says how many files are
missing; re-exports show as "already delivered"; withheld series are calm.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from agent.logs import setup_logging
from agent.status import AgentState
from agent.ui.icons import LOOKS

from ..helpers import Harness, count_colour, screenshot, shots_dir, shows, wait_until, window_box

pytest.importorskip("tkinter", reason="the window needs Tk (Debian: python3-tk)")
pytestmark = pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool")

FOLDER = "Canarysson Wilhelmina"
DESCRIPTION = "CANARY T1 SAGITTAL"
FAST_ATTENTION = {"watch_attention_seconds": 2.0}


def export(folder: Path, n: int, patient_id: str, writer: Callable[..., list[Path]]
           ) -> list[Path]:
    files = writer(folder, n, patient_id=patient_id)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = DESCRIPTION
        ds.SeriesNumber = 9
        ds.SeriesDate = "20240312"
        ds.save_as(f.with_suffix(".tmp"), enforce_file_format=True)
        f.with_suffix(".tmp").replace(f)
    return files


def open_window(h: Harness, until: Callable[[list[str]], bool]) -> tuple[int, int, int, int]:
    h.app.window.show()
    assert h.app.window.wait_rendered(10), "the window never drew"
    assert wait_until(lambda: until(h.app.window.texts()), 15), "\n".join(
        h.app.window.texts())
    assert wait_until(lambda: window_box(h.display, "Recent activity") is not None, 10)
    box = window_box(h.display, "Recent activity")
    assert box is not None
    time.sleep(0.5)  # let Tk paint the last update
    return box


def ocr(img: Image.Image, tmp: Path) -> str:
    """The text Tesseract reads on a screenshot (scaled up: Tk's font is small)."""
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed")
    path = tmp / "ocr.png"
    img.resize((img.width * 2, img.height * 2), Image.Resampling.LANCZOS).save(path)
    out = subprocess.run(["tesseract", str(path), "-", "--psm", "6"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout


def raw_blobs(h: Harness) -> dict[str, bytes]:
    cfg = h.agent.config
    paths = [p for p in cfg.paths.state_dir.glob("ledger.sqlite3*") if p.is_file()]
    paths += [p for p in cfg.paths.log_dir.rglob("*") if p.is_file()]
    paths += list(Path(cfg.target.path).rglob("manifest.json"))
    return {str(p): p.read_bytes() for p in paths}


@pytest.mark.parametrize("harness", [FAST_ATTENTION], indirect=True)
def test_quarantined_row_shows_who_it_is_and_the_waiting_row_what_is_missing(
        harness: Harness, series_writer: Callable[..., list[Path]], tmp_path: Path) -> None:
    h = harness
    cfg = h.agent.config
    setup_logging(cfg.paths.log_dir, "DEBUG", console=False)
    h.stage.gate.set()
    export(h.export / FOLDER / "T1", 2, "PID-CANARY-1", series_writer)
    assert wait_until(lambda: len(h.delivered()) == 1, 20)
    export(h.export / FOLDER / "SC", 2, "QUARANTINE-7", series_writer)
    assert wait_until(lambda: h.agent.status().quarantined == 1, 20)
    # The notification names the export and says what to do.
    assert wait_until(lambda: "Series quarantined" in h.notifier.titles, 10)
    told = dict(h.notifier.sent)["Series quarantined"]
    assert told.startswith("Canarysson, Wilhelmina \u00b7 CANARY T1 SAGITTAL"), told
    assert "What to do:" in told
    # An export still being written: 1 of its 6 files is incomplete.
    files = series_writer(h.export / "Other Patient", 6, patient_name="Other^Patient",
                          patient_id="PID-OTHER-2")
    whole = files[3].read_bytes()
    files[3].write_bytes(whole[:-400])
    identity = (f"Canarysson, Wilhelmina \u00b7 {DESCRIPTION} \u00b7 2024-03-12 \u00b7 MR "
                f"\u00b7 series 9 \u00b7 2 images \u00b7 in {FOLDER}/SC/")

    def drawn(texts: list[str]) -> bool:
        return (any(t.startswith(identity) for t in texts)
                and any("waiting for 1 of 6 files since" in t for t in texts)
                and any(t.startswith("Needs attention") for t in texts))

    box = open_window(h, drawn)
    shot = screenshot(h.display, box)
    shot.save(shots_dir(tmp_path) / "recent-activity-identity.png")
    texts = h.app.window.texts()
    assert "Needs attention - waiting for 1 of 6 files since" in "\n".join(texts)
    assert any(t.startswith("What to do: Read the reason above") for t in texts)
    read = ocr(shot, tmp_path)
    assert "Canarysson" in read and "waiting for 1 of 6 files" in read, read
    # The tray says it too (attention: a stuck export, and a quarantined series).
    assert shows(h.display, "red")
    assert "waiting for 1 of 6 files" in h.app.icon.title
    # The identity is on this screen only: not in the ledger, its WAL, the logs, a manifest.
    for name, blob in raw_blobs(h).items():
        for secret in ("Canarysson", "Wilhelmina", DESCRIPTION, FOLDER, "Other^Patient",
                       "Other Patient"):
            assert secret.encode() not in blob, f"{secret!r} in {name}"
    files[3].write_bytes(whole)  # the viewer finishes
    assert wait_until(lambda: len(h.delivered()) == 2, 20)
    assert wait_until(lambda: not any("waiting for" in t for t in h.app.window.texts()), 10)
    h.app.window.close()


def test_reexports_in_the_window_nothing_new_nothing_new_one_version(
        harness: Harness, series_writer: Callable[..., list[Path]], tmp_path: Path) -> None:
    h = harness
    h.stage.gate.set()
    outbox = Path(h.agent.config.target.path)
    files = export(h.export / FOLDER / "T1", 3, "PID-CANARY-1", series_writer)
    assert wait_until(lambda: len(list(outbox.rglob("manifest.json"))) == 1, 20)
    ledger = h.agent.ledger
    for f in files:  # 1. exported again over the first export
        f.write_bytes(f.read_bytes())
    assert wait_until(lambda: ledger.reexport_count(0) >= 1, 20)
    assert wait_until(lambda: h.agent.status().waiting == (), 10)
    first = ledger.reexport_count(0)
    shutil.copytree(h.export / FOLDER / "T1", h.export / "second copy")  # 2. elsewhere
    assert wait_until(lambda: ledger.reexport_count(0) > first, 20)
    assert wait_until(lambda: h.agent.status().waiting == (), 10)
    assert len(list(outbox.rglob("manifest.json"))) == 1
    box = open_window(h, lambda texts: any(
        f"exported again ({ledger.reexport_count(0)} times)" in t
        and "already delivered, nothing sent" in t for t in texts))
    screenshot(h.display, box).save(shots_dir(tmp_path) / "recent-activity-reexport.png")
    ds = pydicom.dcmread(files[1])  # 3. one image really changed
    ds.WindowCenter = 1234
    ds.save_as(files[1], enforce_file_format=True)
    assert wait_until(lambda: len(list(outbox.rglob("manifest.json"))) == 2, 30)
    assert wait_until(lambda: len(h.delivered()) == 2, 10)
    versions = sorted(s.version for s in h.delivered())
    assert versions == [1, 2] and h.agent.status().quarantined == 0
    assert shows(h.display, "green")
    h.app.window.close()


def test_withheld_is_calm(harness: Harness, series_writer: Callable[..., list[Path]],
                          tmp_path: Path) -> None:
    h = harness
    h.stage.gate.set()
    series_writer(h.export / "scout", 1, patient_id="WITHHOLD-LOC")
    assert wait_until(lambda: h.agent.status().withheld_today == 1, 20)
    assert shows(h.display, "green"), "withheld is no alarm: the icon stays idle"
    status = h.agent.status()
    assert status.state is AgentState.IDLE and status.quarantined == 0
    assert "1 withheld today" in h.app.icon.title
    box = open_window(h, lambda texts: any(t.startswith(
        "Withheld (not sent by policy) - a localizer") for t in texts))
    shot = screenshot(h.display, box)
    shot.save(shots_dir(tmp_path) / "recent-activity-withheld.png")
    assert count_colour(shot, (0xC6, 0x28, 0x28), tol=30) < 10, "no red in the window"
    assert count_colour(shot, LOOKS[AgentState.IDLE].fill[:3], tol=20) > 200
    assert h.app.window.layout().keys().isdisjoint({f"Retry {s.id}" for s in h.agent.recent()})
    assert h.notifier.titles == [] or "Series quarantined" not in h.notifier.titles
    h.app.window.close()
