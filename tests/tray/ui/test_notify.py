"""Notifications: batched, rate-limited, mutable, never sent from the pipeline's threads."""

from __future__ import annotations

import threading

from agent.status import AgentEvent
from agent.ui.notify import (
    LogNotifier,
    NotificationCenter,
    PystrayNotifier,
    RecordingNotifier,
    default_notifier,
)
from agent.vocab import EventKind


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def center(**kw: object) -> tuple[NotificationCenter, RecordingNotifier, Clock]:
    rec, clock = RecordingNotifier(), Clock()
    return NotificationCenter(rec, clock=clock, **kw), rec, clock  # type: ignore[arg-type]


def test_deliveries_are_coalesced_into_one_notification() -> None:
    nc, rec, clock = center()
    for i in range(5):
        nc.handle(AgentEvent(EventKind.DELIVERED, f"{i} files delivered", i))
        clock.now += 1
    assert nc.tick() == 0 and rec.sent == []  # still gathering (10 s window)
    clock.now += 6
    assert nc.tick() == 1
    assert rec.sent == [("Delivered", "5 series delivered")]
    assert nc.pending == 0


def test_single_delivery_keeps_its_message() -> None:
    nc, rec, clock = center(coalesce_seconds=2.0)
    nc.handle(AgentEvent(EventKind.DELIVERED, "12 files delivered", 7))
    clock.now += 2
    nc.tick()
    assert rec.sent == [("Delivered", "12 files delivered")]


def test_quarantine_is_told_at_once_then_rate_limited() -> None:
    nc, rec, clock = center()
    nc.handle(AgentEvent(EventKind.QUARANTINED, "burned-in text suspected", 1))
    assert nc.tick() == 1
    assert rec.sent[-1] == ("Series quarantined", "burned-in text suspected")
    for i in range(3):
        nc.handle(AgentEvent(EventKind.QUARANTINED, "leak", 2 + i))
    clock.now += 10
    assert nc.tick() == 0  # within the 30 s interval
    clock.now += 25
    assert nc.tick() == 1
    assert rec.sent[-1][1].startswith("3 series quarantined")


def test_offline_then_online_in_one_batch_cancel_out() -> None:
    nc, rec, clock = center()
    nc.handle(AgentEvent(EventKind.OFFLINE, "the outbox is not reachable"))
    nc.handle(AgentEvent(EventKind.ONLINE, "reachable again"))
    clock.now += 100
    assert nc.tick() == 0 and rec.sent == []
    nc.handle(AgentEvent(EventKind.CREDENTIALS, "the storage refused the SAS token"))
    assert nc.tick() == 1
    assert rec.titles == ["Credentials problem"]


def test_no_bursts_between_kinds() -> None:
    nc, rec, clock = center(min_gap=2.0)
    nc.handle(AgentEvent(EventKind.QUARANTINED, "a", 1))
    nc.handle(AgentEvent(EventKind.OFFLINE, "b"))
    assert nc.tick() == 1
    clock.now += 2
    assert nc.tick() == 1
    assert rec.titles == ["Series quarantined", "Offline"]


def test_user_actions_do_not_notify_and_mute_silences_everything() -> None:
    nc, rec, clock = center()
    nc.handle(AgentEvent(EventKind.PAUSED, "paused until resumed"))
    nc.handle(AgentEvent(EventKind.STATE, "stopped"))
    assert nc.pending == 0
    muted, rec2, clock2 = center(enabled=False)
    muted.handle(AgentEvent(EventKind.QUARANTINED, "x", 1))
    clock2.now += 100
    assert muted.tick() == 0 and rec2.sent == []


def test_handle_is_thread_safe_and_cheap() -> None:
    nc, rec, clock = center()

    def burst() -> None:
        for i in range(200):
            nc.handle(AgentEvent(EventKind.DELIVERED, "d", i))

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.now += 11
    nc.tick()
    assert rec.sent == [("Delivered", "800 series delivered")]


def test_backend_choice() -> None:
    class WithNotes:
        HAS_NOTIFICATION = True

        def __init__(self) -> None:
            self.calls: list[tuple[str, str | None]] = []

        def notify(self, message: str, title: str | None = None) -> None:
            self.calls.append((message, title))

    icon = WithNotes()
    chosen = default_notifier(icon)
    assert isinstance(chosen, PystrayNotifier)
    chosen.notify("Delivered", "3 series delivered")
    assert icon.calls == [("3 series delivered", "Clinic2Cloud: Delivered")]

    class Without:
        HAS_NOTIFICATION = False

    fallback = default_notifier(Without())
    assert not isinstance(fallback, PystrayNotifier)
    LogNotifier().notify("t", "m")  # never raises


def test_described_events_carry_who_and_what_to_do() -> None:
    seen: list[AgentEvent] = []

    def describe(event: AgentEvent) -> str:
        seen.append(event)
        return f"Canarysson, Wilhelmina: {event.message} What to do: export it again."

    nc, rec, clock = center(describe=describe, coalesce_seconds=1.0)
    nc.handle(AgentEvent(EventKind.QUARANTINED, "the export never completed", 9))
    assert seen == []  # described on the tray's thread (tick), never on the worker's
    nc.tick()
    assert rec.sent == [("Series quarantined", "Canarysson, Wilhelmina: the export never "
                         "completed What to do: export it again.")]


def test_a_failing_description_still_tells_the_news() -> None:
    def broken(_event: AgentEvent) -> str:
        raise OSError("the export folder went away")

    nc, rec, _clock = center(describe=broken)
    nc.handle(AgentEvent(EventKind.QUARANTINED, "kept back", 3))
    nc.tick()
    assert rec.sent == [("Series quarantined", "kept back")]


def test_withheld_and_already_delivered_are_told_calmly_in_batches() -> None:
    nc, rec, clock = center(coalesce_seconds=5.0)
    for i in range(3):
        nc.handle(AgentEvent(EventKind.WITHHELD, "a localizer", i))
        nc.handle(AgentEvent(EventKind.ALREADY_DELIVERED, "exported again", i))
    assert nc.tick() == 0  # no pop-up at once: nobody needs to act
    clock.now += 6
    nc.tick()
    clock.now += 3
    nc.tick()
    assert sorted(rec.sent) == [
        ("Already delivered", "3 exports were already delivered: nothing was sent again"),
        ("Not sent (policy)", "3 series not sent by policy (localizers, reports...)")]


def test_not_dicom_files_are_told_once_an_hour_at_most() -> None:
    nc, rec, clock = center()
    nc.handle(AgentEvent(EventKind.IGNORED, "2 files are not DICOM and were not sent"))
    nc.tick()
    nc.handle(AgentEvent(EventKind.IGNORED, "3 files are not DICOM and were not sent"))
    clock.now += 600
    nc.tick()
    assert rec.titles == ["Files not sent"]
