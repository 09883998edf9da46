"""Sentences people act on, shared by the engine's status and every front end.

What to do about a quarantined series comes from ``agent/data/problems.toml`` (one entry
per :class:`~agent.vocab.ProblemCode`); the waiting and not-DICOM sentences are built
here so that the tray, the window, notifications and ``clinic2cloud status`` say the same
thing in the same words. No sentence here carries PHI: counts, times and codes only.
"""

from __future__ import annotations

import time
import tomllib
from functools import cache
from pathlib import Path

from agent.status import IgnoredFiles, WaitingSeries

_PROBLEMS = Path(__file__).with_name("data") / "problems.toml"


@cache
def _table() -> dict[str, dict[str, object]]:
    with open(_PROBLEMS, "rb") as fh:
        return tomllib.load(fh)


def _actions() -> dict[str, str]:
    return {code: str(entry["action"]) for code, entry in _table().items()}


def same_on_retry(code: str) -> bool:
    """Whether a series kept back with ``code`` would be kept back again by a Retry of the
    same copy with the same settings (the outcome depends on nothing else)."""
    return bool(_table().get(code, {}).get("same_on_retry", False))


def action_for(code: str) -> str:
    """What a person should do about a series quarantined with problem ``code``."""
    actions = _actions()
    return actions.get(code) or actions["default"]


def known_problem_codes() -> set[str]:
    """The codes ``problems.toml`` has an entry for (``default`` excluded)."""
    return set(_actions()) - {"default"}


def hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


def waiting_sentence(w: WaitingSeries, *, detail: bool = False) -> str:
    """``waiting for 3 of 180 files since 12:03 (still being written)``, or while files
    still arrive, ``receiving 120 files since 12:03``. With ``detail``, what happens next
    for a series that needs attention."""
    since = hhmm(w.since)
    if not w.incomplete:
        return f"receiving {w.files} file{'s' * (w.files != 1)} since {since}"
    text = f"waiting for {w.incomplete} of {w.files} files since {since} (still being written)"
    if detail and w.attention and w.gives_up_at:
        text += (f". If the viewer does not finish writing them, the series is kept back at "
                 f"{hhmm(w.gives_up_at)}: check the viewer's export, or export the series again")
    return text


def ignored_sentence(ignored: IgnoredFiles) -> str:
    """``12 files are not DICOM and were not sent; a zip must be unpacked first``."""
    n = ignored.files
    if not n:
        return ""
    text = (f"{n} file{'s are' if n > 1 else ' is'} not DICOM and "
            f"{'were' if n > 1 else 'was'} not sent")
    if ignored.archives:
        a = ignored.archives
        text += (f" ({a} {'are zip or other archives' if a > 1 else 'is a zip or other archive'})"
                 "; a zip must be unpacked into the export folder first")
    return text
