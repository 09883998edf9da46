"""Logging: a rotating file in the log folder, and the console when there is one.

Log records never carry PHI: the code logs series ids, keyed hashes and pseudonyms only,
and export paths are never logged.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import traceback
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


def setup_logging(log_dir: Path, level: str = "INFO", *, console: bool = True) -> Path | None:
    """Configure the root logger; returns the log file, or None if it cannot be written."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        if getattr(handler, "_clinic2cloud", False):
            root.removeHandler(handler)
            handler.close()
    logfile: Path | None = log_dir / "clinic2cloud.log"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        fileh: logging.Handler = logging.handlers.RotatingFileHandler(
            log_dir / "clinic2cloud.log", maxBytes=5_000_000, backupCount=5, encoding="utf-8")
        fileh.setFormatter(logging.Formatter(FORMAT))
        fileh._clinic2cloud = True  # type: ignore[attr-defined]
        root.addHandler(fileh)
    except OSError:
        logfile = None
    # Windowed (frozen) builds have no stderr.
    if console and sys.stderr is not None:
        cons = logging.StreamHandler(sys.stderr)
        cons.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        cons._clinic2cloud = True  # type: ignore[attr-defined]
        root.addHandler(cons)
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    # pydicom logs every warning it raises, quoting the values it found odd (a patient's
    # name in a malformed PN, an export path): never into our log files. What a damaged
    # file means for a series is said by our own messages.
    quiet = logging.getLogger("pydicom")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    for handler in list(root.handlers):
        if getattr(handler, "_clinic2cloud", False) and isinstance(
                handler, logging.handlers.RotatingFileHandler):
            _private(Path(handler.baseFilename))
    return logfile


def _private(path: Path) -> None:
    """The log file is the user's alone, whatever the umask it was first made under."""
    import os

    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an unexpected exception without its message.

    Library messages quote the values and file names they choked on (a patient's name, an
    export path); the type and the frames of our own code are what support needs.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("%s: %s\n%s", what, type(exc).__name__, frames.rstrip())
