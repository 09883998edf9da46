"""Start the agent at login: ``[tray] autostart = true`` (installers set it).

One small entry in the place each platform looks at when a user logs in:

* Linux: an XDG autostart entry, ``$XDG_CONFIG_HOME/autostart/clinic2cloud.desktop``;
* macOS: a LaunchAgent, ``~/Library/LaunchAgents/org.clinic2cloud.agent.plist``;
* Windows: a value ``Clinic2Cloud`` under the registry key
  ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``.

Only the current user is concerned; nothing needs administrator rights.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

APP = "Clinic2Cloud"
DESKTOP_FILE = "clinic2cloud.desktop"
LAUNCH_AGENT_LABEL = "org.clinic2cloud.agent"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def launch_command() -> list[str]:
    """How to start the tray agent: the frozen executable, the installed script, or Python."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "run"]
    script = shutil.which("clinic2cloud")
    if script:
        return [script, "run"]
    return [sys.executable, "-m", "agent", "run"]


def _platform() -> str:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


# Linux -------------------------------------------------------------------------------------


def desktop_file() -> Path:
    """Where the XDG autostart entry lives (honours ``$XDG_CONFIG_HOME``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart" / DESKTOP_FILE


def _desktop_quote(arg: str) -> str:
    """Quote one argument of an ``Exec`` key as the Desktop Entry specification wants."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def desktop_entry(command: list[str]) -> str:
    exec_line = " ".join(_desktop_quote(a) for a in command)
    # The string escapes of desktop files apply before the quoting rules: a backslash of
    # the quoted form is written twice. A literal % is doubled (it starts field codes).
    exec_line = exec_line.replace("\\", "\\\\").replace("%", "%%")
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={APP}\n"
        "Comment=De-identify, deface and deliver brain MRI exports\n"
        f"Exec={exec_line}\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


# macOS -------------------------------------------------------------------------------------


def launch_agent_file() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"


def launch_agent_plist(command: list[str]) -> bytes:
    return plistlib.dumps(
        {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": command,
            "RunAtLoad": True,
            # Quit from the tray means quit: do not restart it behind the person's back.
            "KeepAlive": False,
            "ProcessType": "Interactive",
        }
    )


# Windows -----------------------------------------------------------------------------------


if sys.platform == "win32":  # winreg exists only there (and mypy checks it only there)
    import winreg

    def _windows_set(command: list[str] | None) -> None:
        """Write (``command``) or delete (None) the Run value."""
        access = winreg.KEY_SET_VALUE | winreg.KEY_QUERY_VALUE
        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, access) as key:
            if command is not None:
                winreg.SetValueEx(key, APP, 0, winreg.REG_SZ, subprocess.list2cmdline(command))
                return
            try:
                winreg.DeleteValue(key, APP)
            except FileNotFoundError:
                pass

    def _windows_has() -> bool:
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                winreg.QueryValueEx(key, APP)
            return True
        except FileNotFoundError:
            return False

else:

    def _windows_set(command: list[str] | None) -> None:
        raise OSError("the Run registry key exists only on Windows")

    def _windows_has() -> bool:
        return False


# Public API --------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def enable(command: list[str] | None = None) -> None:
    """Start ``command`` (default :func:`launch_command`) when the current user logs in."""
    command = command or launch_command()
    kind = _platform()
    if kind == "linux":
        _write_atomic(desktop_file(), desktop_entry(command).encode("utf-8"))
    elif kind == "macos":
        _write_atomic(launch_agent_file(), launch_agent_plist(command))
    else:
        _windows_set(command)


def disable() -> None:
    """Remove the login entry, if there is one."""
    kind = _platform()
    if kind == "linux":
        desktop_file().unlink(missing_ok=True)
    elif kind == "macos":
        launch_agent_file().unlink(missing_ok=True)
    else:
        _windows_set(None)


def is_enabled() -> bool:
    """Whether the agent starts at login for the current user."""
    kind = _platform()
    if kind == "linux":
        return desktop_file().is_file()
    if kind == "macos":
        return launch_agent_file().is_file()
    return _windows_has()


def apply(wanted: bool) -> bool:
    """Make the login entry match the configuration; returns True when something changed.

    The configuration is the truth (installers set ``[tray] autostart``), so an entry is
    also removed when the key says false.
    """
    if wanted == is_enabled():
        return False
    if wanted:
        enable()
    else:
        disable()
    return True
