"""dcmtk's command-line tools, found on ``PATH`` past same-named Python scripts.

pynetdicom installs console scripts called ``storescu``, ``storescp`` and ``echoscu`` into
the virtual environment's ``bin``, which comes first on ``PATH`` once the environment is
active. Those are pynetdicom itself, so a test against them would test the node against its
own library instead of an independent peer (and they take other options: ``+tls`` fails).
The real peer is dcmtk's compiled program of that name.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

DCMTK_TOOLS = ("storescu", "echoscu", "storescp")


def _is_script(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True


@cache
def find_dcmtk(tool: str) -> str | None:
    """The path of dcmtk's ``tool``: the first executable of that name on ``PATH`` that is
    a compiled program, not a script; ``None`` where dcmtk is not installed."""
    for folder in os.get_exec_path():
        candidate = Path(folder) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_script(candidate):
            return str(candidate)
    return None


def dcmtk(tool: str) -> str:
    """The path of dcmtk's ``tool``; callers check :func:`find_dcmtk` first to skip."""
    path = find_dcmtk(tool)
    if path is None:
        raise FileNotFoundError(f"dcmtk's {tool} is not installed: apt-get install dcmtk")
    return path
