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
