"""Waiting is visible: incomplete exports, files that are not DICOM, the default waits."""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.config import Config, WatchConfig
from agent.main import Agent
from agent.messages import hhmm
from agent.series import FileState, SeriesTracker
from agent.status import AgentEvent, AgentState, IgnoredFiles
from agent.ui import text
from agent.ui.report import status_document, status_lines
from agent.vocab import EventKind
from tests.conftest import manifests, write_series
from tests.waiting import wait_until


@pytest.fixture
def started(make_config: Callable[..., Config]
            ) -> Iterator[Callable[..., tuple[Agent, list[AgentEvent]]]]:
    made: list[Agent] = []

    def start(**overrides: object) -> tuple[Agent, list[AgentEvent]]:
        agent = Agent(make_config(**overrides))
        events: list[AgentEvent] = []
        agent.subscribe(events.append)
        agent.start()
        made.append(agent)
        return agent, events

    yield start
    for a in made:
        a.stop()


def test_defaults_fit_a_viewers_export() -> None:
    watch = WatchConfig()
    assert 60 <= watch.max_wait_seconds <= 1800  # minutes, not an hour
    assert watch.attention_seconds < watch.max_wait_seconds / 2


def test_given_up_only_when_nothing_changed_for_max_wait() -> None:
    t = SeriesTracker(stable_seconds=10, max_wait=100)
    t.observe("a", "s", FileState(1, 1), now=0)
    t.observe("a", "s", FileState(2, 2), now=90)  # still growing at 90 s
    assert not t.expired("s", now=150)            # a slow export is not given up on
    assert t.expired("s", now=190)


def test_an_incomplete_export_is_shown_and_needs_attention_before_it_is_given_up(
        started: Callable[..., tuple[Agent, list[AgentEvent]]], export_dir: Path,
        outbox_dir: Path) -> None:
    agent, events = started(watch_stable_seconds=0.3, watch_attention_seconds=2.0)
    files = write_series(export_dir, 6)
    whole = files[2].read_bytes()
    files[2].write_bytes(whole[:-300])  # the viewer is still writing this one

    def checked() -> bool:
        waiting = agent.status().waiting
        return bool(waiting) and waiting[0].incomplete == 1

    assert wait_until(checked, 15)
    status = agent.status()
    [w] = status.waiting
    assert w.files == 6 and not w.attention
    assert status.state is AgentState.WORKING
    sentence = f"waiting for 1 of 6 files since {hhmm(w.since)} (still being written)"
    assert text.state_line(status) == f"Receiving an export: {sentence}"
    assert text.counts_line(status).startswith("1 waiting \u00b7 0 queued")
    # Well before it would be given up on (10 minutes), a person is asked to look.
    assert wait_until(lambda: agent.status().state is AgentState.ATTENTION, 10)
    status = agent.status()
    assert status.message == sentence and status.waiting[0].attention
    assert text.state_line(status) == f"Needs attention: {sentence}"
    # Told once (log, notification), at the scanner's next look.
    assert wait_until(lambda: EventKind.WAITING in [e.kind for e in events], 5)
    assert [e.kind for e in events].count(EventKind.WAITING) == 1
    doc = status_document(status, [], source="agent", pid=1)
    [shown] = doc["waiting"]
    assert (shown["files"], shown["incomplete"], shown["attention"]) == (6, 1, True)
    assert datetime.fromisoformat(shown["since"]).tzinfo is not None
    assert shown["message"].startswith(sentence) and "kept back at" in shown["message"]
    assert sentence in "\n".join(status_lines(status, [], source="agent", pid=1))
    # The viewer finishes: delivered, nothing waits any more.
    files[2].write_bytes(whole)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, 20)
    assert wait_until(lambda: agent.status().state is AgentState.IDLE, 10)
    assert agent.status().waiting == ()


def test_files_that_are_not_dicom_are_counted_and_told_once(
        started: Callable[..., tuple[Agent, list[AgentEvent]]], export_dir: Path,
        outbox_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    agent, events = started(watch_stable_seconds=0.5)
    [dcm] = write_series(tmp_path / "made", 1)
    (export_dir / "notes.txt").write_text("report to follow")
    with zipfile.ZipFile(export_dir / "study.zip", "w") as z:
        z.write(dcm, "IMG0001.dcm")
    (export_dir / ".DS_Store").write_bytes(b"\0" * 64)  # desktop litter: not worth a word
    # A DICOM file whose header arrives late: briefly unreadable, never counted as "not DICOM".
    slow = export_dir / "SLOW0001.dcm"
    data = dcm.read_bytes()
    with open(slow, "wb") as fh:
        fh.write(data[:100])
        fh.flush()
        time.sleep(0.1)  # the viewer writing: shorter than stable_seconds on purpose
        fh.write(data[100:])
    assert wait_until(lambda: agent.status().ignored == IgnoredFiles(2, 1), 15)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, 20)
    status = agent.status()
    assert text.ignored_line(status) == (
        "2 files are not DICOM and were not sent (1 is a zip or other archive); "
        "a zip must be unpacked into the export folder first")
    time.sleep(1.0)  # further scans must not tell it again
    assert [e.kind for e in events].count(EventKind.IGNORED) == 1
    told = [r for r in caplog.records if "not DICOM" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in told]
    assert not [r for r in caplog.records if "not a DICOM image" in r.getMessage()]
