"""Notifications: what is worth interrupting a person for, how often, and through what.

:class:`NotificationCenter` turns :class:`~agent.status.AgentEvent` s into few, useful
notifications: deliveries are batched (one "3 series delivered" rather than three
pop-ups), quarantine, offline and credential problems are told at once but rate-limited,
and ``[tray] notifications = false`` mutes them all. Events arrive on the agent's worker
threads; :meth:`NotificationCenter.handle` only records them, and the tray's own thread
calls :meth:`NotificationCenter.tick` to send, so a slow notification backend can never
hold up the pipeline.

A :class:`Notifier` is the backend: pystray's balloon/toast where it has one,
``notify-send`` on Linux desktops whose tray cannot notify, the log otherwise, and a
:class:`RecordingNotifier` for tests.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.status import AgentEvent

log = logging.getLogger(__name__)

APP_NAME = "Clinic2Cloud"


class Notifier(Protocol):
    """Shows one notification. Must not block for long; failures are the backend's to log."""

    def notify(self, title: str, message: str) -> None: ...


class LogNotifier:
    """Writes notifications to the log: the fallback when no desktop backend exists."""

    def notify(self, title: str, message: str) -> None:
        log.info("notification: %s: %s", title, message)


@dataclass
class RecordingNotifier:
    """Keeps every notification, for tests (and for a "last notifications" view)."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def notify(self, title: str, message: str) -> None:
        self.sent.append((title, message))

    @property
    def titles(self) -> list[str]:
        return [title for title, _ in self.sent]


class PystrayNotifier:
    """Notifications through the tray icon itself (Windows toasts, macOS, AppIndicator)."""

    def __init__(self, icon: Any) -> None:
        self._icon = icon

    def notify(self, title: str, message: str) -> None:
        try:
            self._icon.notify(message, f"{APP_NAME}: {title}")
        except Exception:  # a broken notification must not take the tray down
            log.warning("could not show a notification", exc_info=True)


class NotifySendNotifier:
    """``notify-send`` (libnotify) for Linux desktops whose tray backend has no notifications."""

    def __init__(self, command: str = "notify-send") -> None:
        self._command = command

    def notify(self, title: str, message: str) -> None:
        try:
            # Fire and forget: a missing notification daemon must not stall the tray thread.
            subprocess.Popen(
                [self._command, "--app-name", APP_NAME, f"{APP_NAME}: {title}", message],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            log.warning("could not run %s", self._command, exc_info=True)


def default_notifier(icon: Any | None) -> Notifier:
    """The best backend available: the icon's own, else notify-send on Linux, else the log."""
    if icon is not None and getattr(icon, "HAS_NOTIFICATION", False):
        return PystrayNotifier(icon)
    if sys.platform.startswith("linux") and shutil.which("notify-send"):
        return NotifySendNotifier()
    return LogNotifier()


@dataclass(frozen=True)
class Rule:
    """How one kind of event is told: a title, a batching delay, a minimum interval."""

    title: str
    #: Wait this long after the first event of a batch, gathering more, before telling.
    delay: float = 0.0
    #: Never tell this kind twice within this many seconds (later events wait, batched).
    interval: float = 0.0
    #: The text for n > 1 events of the batch ("{n}" is replaced).
    plural: str = ""


def default_rules(coalesce_seconds: float = 10.0) -> dict[str, Rule]:
    """Which events notify. ``paused``/``resumed``/``state`` do not: the person did that,
    or the icon already shows it. Withheld and already-delivered series are told calmly,
    in batches: nobody needs to act."""
    return {
        "delivered": Rule("Delivered", delay=coalesce_seconds, plural="{n} series delivered"),
        "already-delivered": Rule(
            "Already delivered", delay=coalesce_seconds,
            plural="{n} exports were already delivered: nothing was sent again"),
        "withheld": Rule("Not sent (policy)", delay=coalesce_seconds,
                         plural="{n} series not sent by policy (localizers, reports...)"),
        "waiting": Rule("Export incomplete", interval=300.0,
                        plural="{n} exports are incomplete - open Recent activity"),
        "ignored": Rule("Files not sent", interval=3600.0),
        "quarantined": Rule(
            "Series quarantined",
            interval=30.0,
            plural="{n} series quarantined - open Recent activity to review them",
        ),
        "offline": Rule("Offline", interval=300.0),
        "online": Rule("Back online", interval=60.0),
        "credentials": Rule("Credentials problem", interval=300.0),
        # The cloud loop (agent/results): results re-identified and filed locally, or a
        # cloud job that failed, timed out or sent results that were not accepted.
        "results": Rule("Results ready", delay=2.0,
                        plural="Results ready for {n} series (local) - see the results folder"),
        "results-failed": Rule("Cloud processing problem", interval=60.0,
                               plural="{n} cloud results failed or are late"),
    }


class NotificationCenter:
    """Batches and rate-limits agent events into notifications (thread-safe).

    ``handle`` may be called from any thread and never blocks on the backend; ``tick``
    sends whatever is due and is called periodically from one (the tray's) thread.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        enabled: bool = True,
        coalesce_seconds: float = 10.0,
        min_gap: float = 2.0,
        rules: dict[str, Rule] | None = None,
        clock: Callable[[], float] = time.monotonic,
        describe: Callable[[AgentEvent], str] | None = None,
    ) -> None:
        self.notifier = notifier
        self.enabled = enabled
        self._rules = rules if rules is not None else default_rules(coalesce_seconds)
        #: Never two notifications closer than this, whatever their kinds: no bursts.
        self._min_gap = min_gap
        self._clock = clock
        #: Words for one event, called on the tick (tray) thread: the tray adds the local
        #: identity of the series and what to do. Default: the event's own message.
        self._describe = describe
        self._lock = threading.Lock()
        self._pending: dict[str, list[AgentEvent]] = {}
        self._first: dict[str, float] = {}
        self._last_sent: dict[str, float] = {}
        self._last_any = float("-inf")

    def handle(self, event: AgentEvent) -> None:
        """Record an event (called from worker threads: cheap, no I/O)."""
        if not self.enabled or event.kind not in self._rules:
            return
        with self._lock:
            if event.kind in ("offline", "online"):
                # Only the latest connectivity news matters: "offline" then "online" within
                # one batch cancel out.
                other = "online" if event.kind == "offline" else "offline"
                if self._pending.pop(other, None) is not None:
                    self._first.pop(other, None)
                    return
            self._pending.setdefault(event.kind, []).append(event)
            self._first.setdefault(event.kind, self._clock())

    def tick(self) -> int:
        """Send every batch that is due; returns how many notifications were shown."""
        due: list[tuple[Rule, list[AgentEvent]]] = []
        with self._lock:
            now = self._clock()
            for kind in sorted(self._pending, key=lambda k: self._first[k]):
                rule = self._rules[kind]
                ready = max(
                    self._first[kind] + rule.delay,
                    self._last_sent.get(kind, float("-inf")) + rule.interval,
                    self._last_any + self._min_gap,
                )
                if now < ready:
                    continue
                events = self._pending.pop(kind)
                del self._first[kind]
                self._last_sent[kind] = now
                self._last_any = now
                due.append((rule, events))
        # Outside the lock: describing reads local files, and the backend may be slow.
        for batch_rule, events in due:
            title, message = self._compose(batch_rule, events)
            self.notifier.notify(title, message)
        return len(due)

    @property
    def pending(self) -> int:
        """Events recorded but not yet told."""
        with self._lock:
            return sum(len(m) for m in self._pending.values())

    def _compose(self, rule: Rule, events: list[AgentEvent]) -> tuple[str, str]:
        if len(events) == 1 or not rule.plural:
            event = events[-1]
            try:
                words = self._describe(event) if self._describe else event.message
            except Exception:
                log.warning("could not describe a notification", exc_info=True)
                words = event.message
            return rule.title, words
        return rule.title, rule.plural.format(n=len(events))
