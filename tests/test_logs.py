from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from agent.config import Config
from agent.deid import DeidStage, VerifyStage
from agent.logs import setup_logging
from agent.main import Agent
from agent.vocab import SeriesState
from agent.work import SeriesWork
from tests.conftest import PATIENT_NAME, write_series
from tests.waiting import wait_until


class Exploding:
    """A stage with a bug whose message quotes a patient's name, as library errors do."""

    name = "explode"

    def __call__(self, work: SeriesWork) -> None:
        raise ValueError(f"Invalid value {PATIENT_NAME!r} in {work.source_files[0]}")


def test_unexpected_errors_quarantine_and_log_no_message(
        make_config: Callable[..., Config], export_dir: Path) -> None:
    cfg = make_config()
    logfile = setup_logging(cfg.paths.log_dir, "INFO", console=False)
    agent = Agent(cfg, stages=[DeidStage(cfg, b"s" * 32), Exploding(), VerifyStage(cfg)])
    agent.start()
    try:
        write_series(export_dir, 2)
        assert wait_until(lambda: agent.status().quarantined == 1)
    finally:
        agent.stop()
        for h in logging.getLogger().handlers:
            h.flush()
    [row] = agent.ledger.in_state(SeriesState.QUARANTINED)
    assert row.code == "internal" and "explode step failed" in row.reason
    assert logfile is not None
    text = logfile.read_text()
    assert "stage explode failed" in text and "ValueError" in text
    assert "Canarysson" not in text


def test_pydicom_warnings_quoting_values_stay_out_of_the_log(tmp_path: Path) -> None:
    import io
    import warnings

    import pydicom

    logfile = setup_logging(tmp_path / "logs", console=False)
    assert logfile is not None
    [path] = write_series(tmp_path / "s", 1)
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientName = PATIENT_NAME + "\\x00bad"  # pydicom complains, quoting the value
        ds.save_as(io.BytesIO())
        pydicom.dcmread(io.BytesIO(path.read_bytes()), force=True)
        from pydicom.misc import warn_and_log

        warn_and_log(f"Invalid value for VR PN: {PATIENT_NAME!r}")
    for h in logging.getLogger().handlers:
        h.flush()
    assert PATIENT_NAME not in logfile.read_text(encoding="utf-8")
    assert os.stat(logfile).st_mode & 0o077 == 0
