"""Start at login: the XDG autostart entry, for real, under a temporary XDG_CONFIG_HOME."""

from __future__ import annotations

import configparser
import plistlib
import sys
from pathlib import Path

import pytest

from agent.ui import autostart

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="XDG autostart is Linux's")


def split_exec(line: str) -> list[str]:
    """The quoting rules of the Desktop Entry specification's Exec key, read back."""
    args: list[str] = []
    current, quoted, i, started = "", False, 0, False
    while i < len(line):
        c = line[i]
        if quoted and c == "\\" and i + 1 < len(line) and line[i + 1] in '"`$\\':
            current += line[i + 1]
            i += 2
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if current or started:
                args.append(current)
            current, started = "", False
        else:
            current += c
        i += 1
    if current or started:
        args.append(current)
    return args


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_enable_writes_a_valid_desktop_entry(xdg: Path) -> None:
    assert not autostart.is_enabled()
    cmd = ["/opt/Clinic 2 Cloud/bin/clinic2cloud", "run", "--config", "/tmp/a $b/c.toml"]
    autostart.enable(cmd)
    path = xdg / "autostart" / "clinic2cloud.desktop"
    assert autostart.desktop_file() == path and path.is_file()
    assert autostart.is_enabled()
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read(path, encoding="utf-8")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Name"] == "Clinic2Cloud"
    # The Exec line reads back into the same argv: first the string escapes of desktop
    # files (a doubled backslash), then the quoting rules, which are shell-like.
    assert split_exec(desktop["Exec"].replace("\\\\", "\\")) == cmd


def test_disable_and_apply(xdg: Path) -> None:
    autostart.disable()  # nothing there: no error
    assert autostart.apply(True) is True
    assert autostart.is_enabled()
    exec_line = (xdg / "autostart" / "clinic2cloud.desktop").read_text()
    assert " run" in exec_line
    assert autostart.apply(True) is False
    assert autostart.apply(False) is True
    assert not autostart.is_enabled()


def test_launch_command_runs_the_agent() -> None:
    cmd = autostart.launch_command()
    assert cmd[-1] == "run"
    assert Path(cmd[0]).exists()


def test_macos_plist_content() -> None:
    data = plistlib.loads(autostart.launch_agent_plist(["/Applications/C2C", "run"]))
    assert data["ProgramArguments"] == ["/Applications/C2C", "run"]
    assert data["RunAtLoad"] is True and data["Label"] == "org.clinic2cloud.agent"
