"""The pipeline's endings: delivered, withheld by policy, quarantined."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom

from agent.config import Config
from agent.deid import DeidStage, VerifyStage
from agent.errors import Withheld
from agent.oneshot import process_folder
from agent.vocab import SeriesState, WithheldCode
from agent.work import SeriesWork, Stage
from tests.conftest import write_series


class HoldLocalizers:
    """A policy stage that withholds every series whose description says localizer."""

    name = "select"

    def __call__(self, work: SeriesWork) -> None:
        if "LOCALIZER" in work.series_description.upper():
            raise Withheld("localizers are not sent", code=WithheldCode.LOCALIZER)


def test_withheld_is_an_ending_that_is_not_a_failure(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    cfg = make_config()
    secret = b"s" * 32
    src = tmp_path / "src"
    write_series(src / "a", 2)
    files = write_series(src / "b", 2)

    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "3-plane localizer"
        ds.save_as(f)
    out = tmp_path / "out"
    stages: list[Stage] = [DeidStage(cfg, secret), HoldLocalizers(), VerifyStage(cfg)]
    summary = process_folder(cfg, src, out, stages=stages)
    states = sorted(o.state for o in summary.series)
    assert states == [SeriesState.DELIVERED, SeriesState.WITHHELD]
    assert summary.ok and summary.as_dict()["withheld"] == 1
    [held] = [o for o in summary.series if o.state == SeriesState.WITHHELD]
    assert held.code == WithheldCode.LOCALIZER and "localizers" in held.reason
    assert len(list(out.rglob("manifest.json"))) == 1  # nothing of the withheld one left
