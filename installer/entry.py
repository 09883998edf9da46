"""Entry point of the frozen (PyInstaller) application: ``clinic2cloud`` with no Python.

The de-identification runs in a *spawn* process pool (agent/procpool.py). In a frozen app
spawn re-executes this very binary with multiprocessing's own arguments, so
``freeze_support()`` must run before anything else: it turns those re-executions into pool
workers instead of a second copy of the command line interface.

A windowed build (Windows ``clinic2cloudw.exe``) starts with ``sys.stdout`` and
``sys.stderr`` set to None. They are left that way on purpose: agent/cli.py and
agent/logs.py test for None to skip console output, and the standard library's print,
warnings and logging already treat a None stream as "discard".
"""

from __future__ import annotations

import multiprocessing


def main() -> int:
    multiprocessing.freeze_support()
    # Imported after freeze_support: a pool worker must not pay for (or be affected by)
    # importing the whole CLI before it learns it is a worker.
    from agent.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
