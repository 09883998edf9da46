"""Cheap checks of the installer definitions, without building anything.

The real builds run in installer/ci-linux.sh (Linux, end to end) and in
.github/workflows/installers.yml (Windows, macOS). These tests catch the mistakes that
would only show there: a spec that does not compile, a plist that does not parse, an
Inno Setup script without its silent-install pieces, a control file dpkg would refuse,
paths that disagree with agent/paths.py.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from agent.config import _SECTIONS, load_config
from agent.paths import APP, AgentPaths
from agent.ui import autostart

ROOT = Path(__file__).resolve().parents[2]
INST = ROOT / "installer"
SHELL_SCRIPTS = [
    INST / "ci-linux.sh",
    INST / "linux" / "build-deb.sh",
    INST / "macos" / "build-pkg.sh",
]
POSIX_SCRIPTS = [
    INST / "linux" / "postinst",
    INST / "linux" / "prerm",
    INST / "linux" / "postrm",
    INST / "macos" / "scripts" / "preinstall",
    INST / "macos" / "scripts" / "postinstall",
    INST / "macos" / "uninstall.sh",
]


# -- PyInstaller ---------------------------------------------------------------------------


def test_spec_compiles_and_bundles_what_the_frozen_app_needs() -> None:
    text = (INST / "clinic2cloud.spec").read_text(encoding="utf-8")
    compile(text, "clinic2cloud.spec", "exec")
    for needed in ('"templates"', 'collect_data_files("agent")', "entry.py",
                   "config.example.toml", "console=False", "BUNDLE("):
        assert needed in text, needed
    for dist in ("pydicom", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg",
                 "pylibjpeg-rle"):
        assert f'"{dist}"' in text, f"copy_metadata({dist}) missing: entry points lost"
    for module in ("pydicom.pixels", "SimpleITK", "watchdog.observers", "azure.storage.blob",
                   "azure.core", "platformdirs", "Xlib"):
        assert f'"{module}"' in text, module
    for backend in ("pystray._win32", "pystray._darwin", "pystray._xorg",
                    "pystray._appindicator", "pystray._gtk"):
        assert backend in text, backend


def test_spec_template_folder_is_where_the_deface_code_looks() -> None:
    """Bundled as <bundle>/templates, which agent/deface/template.py finds via _MEIPASS."""
    template = ROOT / "agent" / "deface" / "template.py"
    if not template.is_file():
        pytest.skip("agent/deface not present yet")
    assert '"_MEIPASS"' in template.read_text() and '"templates"' in template.read_text()


def test_entry_point_calls_freeze_support_before_importing_the_cli() -> None:
    tree = ast.parse((INST / "entry.py").read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    first = main.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
    assert ast.unparse(first.value) == "multiprocessing.freeze_support()"
    top_imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert not any("agent" in i for i in top_imports), "the CLI must be imported after"


def test_entry_point_runs_the_cli(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    monkeypatch.setattr("sys.argv", ["clinic2cloud", "--version"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(INST / "entry.py"), run_name="__main__")
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"clinic2cloud {__version__}"


# -- the fleet configuration example ---------------------------------------------------------


def test_example_fleet_config_is_valid_and_locks_real_keys(tmp_path: Path) -> None:
    import tomllib

    example = INST / "config.example.toml"
    cfg = load_config(None, machine_file=example, paths=AgentPaths.under(tmp_path))
    assert cfg.sources == (str(example),)
    assert cfg.tray.autostart is False  # installers own autostart; no second user entry
    locked = tomllib.loads(example.read_text(encoding="utf-8"))["policy"]["locked"]
    for key in locked:
        section, _, name = key.partition(".")
        assert section in _SECTIONS and hasattr(_SECTIONS[section](), name), key


# -- Windows ---------------------------------------------------------------------------------


def _iss() -> str:
    return (INST / "windows" / "clinic2cloud.iss").read_text(encoding="utf-8")


def _iss_sections(text: str) -> dict[str, str]:
    parts = re.split(r"^\[(\w+)\]\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_iss_has_the_sections_and_setup_flags_of_a_silent_per_machine_install() -> None:
    text = _iss()
    sections = _iss_sections(text)
    for name in ("Setup", "Files", "Dirs", "Registry", "Run", "UninstallRun", "Code"):
        assert name in sections, name
    setup = dict(
        line.split("=", 1) for line in sections["Setup"].splitlines()
        if "=" in line and not line.startswith(";")
    )
    assert setup["PrivilegesRequired"] == "admin"
    assert setup["PrivilegesRequiredOverridesAllowed"] == ""  # never a per-user fallback
    assert setup["DefaultDirName"] == r"{autopf}\{#AppName}"
    assert re.fullmatch(r"\{\{[0-9A-F-]{36}\}", setup["AppId"]), "fixed AppId for upgrades"
    assert "#define AppName \"Clinic2Cloud\"" in text and APP == "Clinic2Cloud"
    assert "/VERYSILENT /SUPPRESSMSGBOXES /NORESTART" in text  # documented command line


def test_iss_installs_the_site_config_where_the_agent_reads_it() -> None:
    text = _iss()
    files = _iss_sections(text)["Files"]
    # C:\ProgramData\Clinic2Cloud\config.toml = {commonappdata}\{#AppName} (agent/paths.py)
    assert re.search(r'Source: "\{code:ParamFile\|CONFIG\}"; DestDir: "\{commonappdata\}'
                     r'\\\{#AppName\}"; \\\s*DestName: "config.toml"', files)
    config_entry = files[files.index("ParamFile|CONFIG"):].split("\n\n")[0]
    assert "external" in config_entry and "uninsneveruninstall" in config_entry
    assert "HasParam('CONFIG')" in config_entry
    assert "{param:' + Name + '|}" in text
    assert r'Source: "{#SourceDir}\*"' in files and "recursesubdirs" in files
    assert text.count('#define SourceDir "..\\..\\dist\\clinic2cloud"') == 1


def test_iss_autostarts_for_all_users_and_uninstall_keeps_data_unless_purge() -> None:
    text = _iss()
    registry = _iss_sections(text)["Registry"]
    assert 'Root: HKLM; Subkey: "Software\\Microsoft\\Windows\\CurrentVersion\\Run"' in registry
    assert '""{app}\\{#AppExeW}"" run' in registry and "uninsdeletevalue" in registry
    code = _iss_sections(text)["Code"]
    assert "'/PURGE'" in code and "usPostUninstall" in code
    assert "PurgeUserData" in code
    # Pascal blocks balance (a cheap syntax check: iscc is not available on Linux).
    words = re.findall(r"\b(begin|try|end)\b", re.sub(r"//.*|'[^']*'", "", code), flags=re.I)
    assert sum(w.lower() in ("begin", "try") for w in words) == sum(
        w.lower() == "end" for w in words)


def test_windows_machine_config_path_matches_agent_paths(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from agent import paths

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("PROGRAMDATA", r"C:\ProgramData")
    assert str(paths._machine_config_dir()).replace("/", "\\") == r"C:\ProgramData\Clinic2Cloud"


# -- macOS -----------------------------------------------------------------------------------


def test_launch_agent_plist() -> None:
    plist = plistlib.loads((INST / "macos" / "org.clinic2cloud.agent.plist").read_bytes())
    component = plistlib.loads((INST / "macos" / "component.plist").read_bytes())
    assert plist["Label"] == autostart.LAUNCH_AGENT_LABEL
    app = component[0]["RootRelativeBundlePath"]
    assert plist["ProgramArguments"] == [f"/{app}/Contents/MacOS/clinic2cloud", "run"]
    assert plist["RunAtLoad"] is True
    assert plist["LimitLoadToSessionType"] == "Aqua"
    assert plist["KeepAlive"] == {"Crashed": True}  # no restart loop on Quit or bad config
    assert component[0]["BundleIsRelocatable"] is False


def test_macos_scripts_and_pkgbuild_agree_on_paths() -> None:
    build = (INST / "macos" / "build-pkg.sh").read_text()
    post = (INST / "macos" / "scripts" / "postinstall").read_text()
    assert "--identifier org.clinic2cloud.agent" in build
    assert "--component-plist" in build and "--scripts" in build
    assert "Library/Application Support/Clinic2Cloud" in build
    assert "/usr/local/bin/clinic2cloud" in post and "launchctl bootstrap" in post
    assert 'CONF="/Library/Application Support/Clinic2Cloud"' in post


# -- Linux -----------------------------------------------------------------------------------


def test_deb_control_file_renders_to_valid_fields() -> None:
    text = (INST / "linux" / "control.in").read_text(encoding="utf-8")
    rendered = (text.replace("@VERSION@", __version__).replace("@ARCH@", "amd64")
                .replace("@LIBC@", "2.36").replace("@SIZE_KB@", "400000"))
    assert "@" not in rendered.replace("@example.org", "")
    msg = email.parser.Parser().parsestr(rendered)
    for field in ("Package", "Version", "Architecture", "Maintainer", "Description",
                  "Depends", "Installed-Size", "Section", "Priority"):
        assert msg[field], field
    assert msg["Package"] == "clinic2cloud"
    assert re.fullmatch(r"[0-9][A-Za-z0-9.+~-]*", msg["Version"])
    assert re.fullmatch(r".+ <[^>]+@[^>]+>", msg["Maintainer"])
    for line in text.splitlines():
        assert line == line.rstrip(), "trailing whitespace breaks dpkg field parsing"
    body = text.split("Description:", 1)[1].splitlines()[1:]
    assert body and all(line.startswith(" ") for line in body if line)


def test_deb_layout_in_build_script() -> None:
    build = (INST / "linux" / "build-deb.sh").read_text()
    for needed in ("/opt/clinic2cloud", "ln -s /opt/clinic2cloud/clinic2cloud",
                   "etc/xdg/autostart", "etc/clinic2cloud", "DEBIAN/conffiles",
                   "--root-owner-group"):
        assert needed in build, needed
    assert str(AgentPaths(Path("c"), Path("s"), Path("l"), Path("/etc/clinic2cloud"))
               .machine_config) == "/etc/clinic2cloud/config.toml"


def test_xdg_autostart_entry() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(INST / "linux" / "clinic2cloud.desktop", encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"] == "/usr/bin/clinic2cloud run"
    assert entry["Terminal"] == "false"
    # Same file name as the user entry agent/ui/autostart.py writes: a user's own entry
    # then overrides the system one (XDG rule) instead of starting a second agent.
    assert autostart.DESKTOP_FILE == "clinic2cloud.desktop"


# -- scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS + POSIX_SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_executable_and_parse(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    first = script.read_text().splitlines()[0]
    assert first in ("#!/bin/sh", "#!/usr/bin/env bash"), first
    shell = "bash" if "bash" in first else "sh"
    subprocess.run([shell, "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-x", "-S", "warning", str(script)], check=True,
                       cwd=script.parent)


# -- CI workflow and docs --------------------------------------------------------------------


def test_ci_workflow_builds_on_windows_and_macos() -> None:
    path = ROOT / ".github" / "workflows" / "installers.yml"
    text = path.read_text(encoding="utf-8")
    assert "\t" not in text
    for needed in ("windows-latest", "macos-latest", "clinic2cloud.spec", "iscc",
                   "/VERYSILENT", "build-pkg.sh", "installer -pkg", "ci-linux.sh"):
        assert needed in text, needed
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    assert {"windows", "macos", "linux"} <= set(doc["jobs"])


def test_deployment_doc_gives_the_command_lines() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for needed in ("/VERYSILENT /SUPPRESSMSGBOXES /NORESTART", "/CONFIG=", "/PURGE",
                   "installer -pkg", "dpkg -i", "apt", "clinic2cloud doctor",
                   "[policy]", "secret_env", "secret_file", "SAS", "Intune", "SCCM", "Jamf",
                   r"C:\ProgramData\Clinic2Cloud\config.toml", "/etc/clinic2cloud/config.toml",
                   "/Library/Application Support/Clinic2Cloud/config.toml"):
        assert needed in text, needed
