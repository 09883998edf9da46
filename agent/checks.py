"""Start-up checks: what must hold before the agent takes a single series.

The same list runs at ``clinic2cloud run`` (the first failure ends the start in one line,
exit code 2) and in ``clinic2cloud doctor`` (every check listed with its verdict). Each
check says what it looked at and, when it fails, what to do - in one sentence, never a
traceback.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config
from agent.diskspace import free_space_problem
from agent.errors import Clinic2CloudError, StartupError


@dataclass(frozen=True)
class Check:
    """One start-up check: what was checked, and the problem ("" when it passed)."""

    name: str
    what: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def writable_problem(folder: Path) -> str:
    """Why this user cannot create files in ``folder`` (created if missing), or ""."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".clinic2cloud-probe-{uuid.uuid4().hex[:8]}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        return (f"{folder} is not writable ({exc.strerror}): create it or give this user "
                "write access")
    return ""


def _folders(cfg: Config) -> str:
    p = cfg.paths
    for folder in (p.state_dir, p.work, p.quarantine, p.renders, p.log_dir):
        problem = writable_problem(folder)
        if problem:
            return problem
    return ""


def _space(cfg: Config) -> str:
    return free_space_problem(cfg.paths.state_dir)


def _watch_folder(cfg: Config) -> str:
    if not cfg.watch.folder:
        return ""
    folder = Path(cfg.watch.folder).expanduser()
    if not folder.is_dir():
        return f"[watch.folder] {folder} does not exist or is not a folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return f"[watch.folder] {folder} cannot be read by this user"
    return ""


def _ledger(cfg: Config) -> str:
    from agent.keys import installation_secret
    from agent.ledger import Ledger

    if not cfg.paths.ledger.exists():
        return ""
    try:
        Ledger(cfg.paths.ledger, installation_secret(cfg.paths.installation_secret)).close()
    except Clinic2CloudError as exc:
        return str(exc)
    return ""


def _keys(cfg: Config) -> str:
    from agent.keys import installation_secret, site_secret

    try:
        installation_secret(cfg.paths.installation_secret)
        site_secret(cfg.site.secret_file, cfg.paths.installation_secret)
    except Clinic2CloudError as exc:
        return str(exc)
    return ""


def _templates(cfg: Config) -> str:
    if not cfg.deface.enabled:
        return ""
    try:
        from agent.deface.template import load_template

        load_template()
    except Clinic2CloudError as exc:
        return str(exc)
    except ImportError as exc:  # a broken install can lack SimpleITK's binary part
        return (f"the defacing library cannot be loaded ({type(exc).__name__}); reinstall "
                "Clinic2Cloud")
    return ""


_CHECKS: tuple[tuple[str, str, Callable[[Config], str]], ...] = (
    ("folders", "state, work, quarantine, renders and log folders are writable", _folders),
    ("disk space", "the disk holding the state folder has room for the ledger", _space),
    ("export folder", "the watched export folder exists and can be read", _watch_folder),
    ("keys", "the installation and site keys are readable and private", _keys),
    ("ledger", "the ledger opens, its schema is known and its head matches", _ledger),
    ("templates", "the defacing templates are present and load (when defacing is on)",
     _templates),
)


def startup_checks(cfg: Config) -> list[Check]:
    """Every start-up check, in order, with its verdict."""
    return [Check(name, what, check(cfg)) for name, what, check in _CHECKS]


def run_startup_checks(cfg: Config, skip: tuple[str, ...] = ()) -> None:
    """Raise StartupError (exit code 2) with the first failed check's one line."""
    for name, _, check in _CHECKS:
        if name in skip:
            continue
        problem = check(cfg)
        if problem:
            raise StartupError(f"{name}: {problem}")
