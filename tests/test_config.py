from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.paths import AgentPaths


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file(agent_paths: AgentPaths) -> None:
    cfg = load_config(None, paths=agent_paths)
    assert cfg.watch.stable_seconds == 30
    assert cfg.target.kind == "folder"
    assert cfg.deface.enabled is True
    assert cfg.deid.retain_longitudinal_modified_dates is True
    assert cfg.sources == ()


def test_user_file_overrides_machine_file(agent_paths: AgentPaths, tmp_path: Path) -> None:
    _write(agent_paths.machine_config, '[watch]\nstable_seconds = 10\npolling = true\n')
    user = _write(tmp_path / "user.toml", "[watch]\nstable_seconds = 20\n")
    cfg = load_config(user, paths=agent_paths)
    assert cfg.watch.stable_seconds == 20.0
    assert cfg.watch.polling is True
    assert cfg.sources == (str(agent_paths.machine_config), str(user))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[watch]\nstabel_seconds = 3\n", "unknown key 'stabel_seconds' in [watch]"),
        ("[wach]\nfolder = 'x'\n", "unknown section [wach]"),
        ("[watch]\nstable_seconds = 'soon'\n", "[watch.stable_seconds] must be a number"),
        ("[deface]\nenabled = 1\n", "[deface.enabled] must be true or false"),
        ("[target]\nkind = 's3'\n", "[target.kind] must be one of folder, azure"),
        ("[watch]\nstable_seconds = -1\n", "[watch.stable_seconds] must be greater than 0"),
        ("[site]\nname = 'a b'\n", "[site.name] must be"),
        ("[watch\n", "not valid TOML"),
    ],
)
def test_bad_values_name_key_and_file(agent_paths: AgentPaths, tmp_path: Path, text: str,
                                      expected: str) -> None:
    path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, paths=agent_paths)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_machine_policy_locks_keys(agent_paths: AgentPaths, tmp_path: Path) -> None:
    _write(agent_paths.machine_config,
           '[policy]\nlocked = ["deface.enabled"]\n[deface]\nenabled = true\n')
    user = _write(tmp_path / "user.toml", "[deface]\nenabled = false\n")
    with pytest.raises(ConfigError, match="locked by the machine-wide configuration"):
        load_config(user, paths=agent_paths)


def _cli(*args: str, env_home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "CLINIC2CLOUD_HOME": str(env_home)}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.toml", "[watch]\nstable_seconds = 'x'\n")
    result = _cli("run", "--headless", "--config", str(bad), env_home=tmp_path / "home")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "stable_seconds" in lines[0] and str(bad) in lines[0]


def test_cli_missing_watch_folder_exit_2(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.toml", f'[watch]\nfolder = "{tmp_path}/nope"\n'
                 f'[target]\npath = "{tmp_path}/out"\n')
    result = _cli("run", "--headless", "--config", str(cfg), env_home=tmp_path / "home")
    assert result.returncode == 2
    assert "[watch.folder]" in result.stderr and "does not exist" in result.stderr


def test_cli_missing_config_file_exit_2(tmp_path: Path) -> None:
    result = _cli("status", "--config", str(tmp_path / "absent.toml"),
                  env_home=tmp_path / "home")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_version(tmp_path: Path) -> None:
    from agent import __version__

    result = _cli("--version", env_home=tmp_path / "home")
    assert result.returncode == 0
    assert __version__ in result.stdout
