"""Where the agent keeps things, following each platform's conventions (platformdirs)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "Clinic2Cloud"


def _machine_config_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / APP
    if sys.platform == "darwin":
        return Path("/Library/Application Support") / APP
    return Path("/etc/clinic2cloud")


@dataclass(frozen=True)
class AgentPaths:
    """Every location the agent reads or writes, outside the export folder and the target."""

    config_dir: Path
    state_dir: Path
    log_dir: Path
    machine_config_dir: Path

    @property
    def user_config(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def machine_config(self) -> Path:
        return self.machine_config_dir / "config.toml"

    @property
    def ledger(self) -> Path:
        return self.state_dir / "ledger.sqlite3"

    @property
    def work(self) -> Path:
        """Staging copies and intermediate outputs, one folder per series attempt."""
        return self.state_dir / "work"

    @property
    def quarantine(self) -> Path:
        return self.state_dir / "quarantine"

    @property
    def renders(self) -> Path:
        return self.state_dir / "renders"

    @property
    def installation_secret(self) -> Path:
        return self.state_dir / "installation.key"

    @property
    def runtime_file(self) -> Path:
        """Lock file and control endpoint of the running agent."""
        return self.state_dir / "agent.lock"

    @classmethod
    def under(cls, root: Path) -> AgentPaths:
        """Everything below one folder: for tests, one-shot runs and portable installs."""
        return cls(
            config_dir=root / "config",
            state_dir=root / "state",
            log_dir=root / "logs",
            machine_config_dir=root / "machine",
        )


def default_paths() -> AgentPaths:
    """The platform's locations, or everything under ``$CLINIC2CLOUD_HOME`` when it is set."""
    home = os.environ.get("CLINIC2CLOUD_HOME")
    if home:
        return AgentPaths.under(Path(home))
    return AgentPaths(
        config_dir=Path(platformdirs.user_config_dir(APP, appauthor=False)),
        state_dir=Path(platformdirs.user_data_dir(APP, appauthor=False)),
        log_dir=Path(platformdirs.user_log_dir(APP, appauthor=False)),
        machine_config_dir=Path(
            os.environ.get("CLINIC2CLOUD_MACHINE_CONFIG_DIR") or _machine_config_dir()
        ),
    )


# -- who may read what the agent writes ---------------------------------------------------
#
# Staged copies and quarantined originals carry patients' names; so may logs' neighbours
# and re-link data. Everything the agent writes below its state, log and config folders is
# owner-only: folders 0700, files 0600, whatever the umask the agent was started with.
# On Windows the per-user profile folders (LOCALAPPDATA) that platformdirs returns are
# already readable by their owner, SYSTEM and Administrators only; the installer and
# docs/deployment.md show the icacls command for portable installs.

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_POSIX = os.name == "posix"


def secure_umask() -> None:
    """Make every file and folder this process creates owner-only (umask 077).

    The umask is the one switch that also covers what libraries create (SQLite's WAL,
    log rotation, the defacing renders). The outbox, which may be shared with an
    uploader's group, sets its modes explicitly (:mod:`agent.sync.folder`).
    """
    if _POSIX:
        old = os.umask(0o077)
        os.umask(old | 0o077)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) owner-only; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if _POSIX and (path.stat().st_mode & 0o777) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def tighten(paths: AgentPaths) -> None:
    """Make the agent's folders owner-only, and the files directly in them 0600.

    Run at start: folders left by an earlier version (or made under a loose umask) are
    closed before anything is read or written. Closing a folder is enough for what lies
    deeper (others cannot traverse it), so only the top level is walked.
    """
    for folder in (paths.state_dir, paths.work, paths.quarantine, paths.renders,
                   paths.log_dir, paths.config_dir):
        private_dir(folder)
        if not _POSIX:
            continue
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False):
                mode = entry.stat(follow_symlinks=False).st_mode & 0o777
                if mode & 0o077:
                    os.chmod(entry.path, mode & 0o700)


def world_or_group_access(path: Path) -> int:
    """The group/other permission bits of ``path`` (0 on Windows, where ACLs rule)."""
    if not _POSIX:
        return 0
    return path.stat().st_mode & 0o077


def refuse_if_shared(path: Path, what: str) -> None:
    """Raise ConfigError when a file holding a secret is readable or writable by others,
    with the command that fixes it."""
    from agent.errors import ConfigError

    try:
        shared = world_or_group_access(path)
    except OSError:
        return  # reading it will say what is wrong
    if shared:
        mode = path.stat().st_mode & 0o777
        raise ConfigError(
            f"{path}: the {what} is open to other users (mode {mode:04o}); run "
            f"`chmod 600 {path}` and keep it owned by the user running Clinic2Cloud")
