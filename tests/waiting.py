"""The one waiting helper of the test suite: wait on a condition, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 30.0,
               step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds passed; its last verdict.

    Polling with a short step is the fallback for conditions nothing signals (files
    appearing, another process's state); prefer waiting on an event where there is one.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
