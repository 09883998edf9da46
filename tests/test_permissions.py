"""Identity-bearing files are the user's alone, whatever the umask; secrets others could
read are refused with the chmod to run; another OS user of the machine reads nothing.

The second-user test creates a real account (``useradd``, as root, where allowed) and tries
every file the agent wrote as that user, in a child process that dropped to its uid.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from agent.config import Config, load_config
from agent.errors import ConfigError
from agent.keys import site_secret
from tests.conftest import StartAgent, manifests, write_series
from tests.waiting import wait_until

POSIX = os.name == "posix"
pytestmark = pytest.mark.skipif(not POSIX, reason="POSIX modes; Windows uses ACLs")
INTRUDER = "c2c-intruder"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")]}


def _run_one_quarantined_one_delivered(running_agent: StartAgent, export_dir: Path,
                                       outbox_dir: Path, tmp_path: Path) -> Config:
    agent = running_agent()
    write_series(export_dir / "good", 2)
    for f in write_series(tmp_path / "made", 2, patient_name="Burned^Bertha"):
        ds = pydicom.dcmread(f)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(export_dir / f.name)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1
                      and agent.status().quarantined == 1)
    return agent.config


def test_everything_written_is_owner_only_under_a_loose_umask(
        loose_umask: None, running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        tmp_path: Path) -> None:
    from agent.logs import setup_logging

    cfg = _run_one_quarantined_one_delivered(running_agent, export_dir, outbox_dir, tmp_path)
    setup_logging(cfg.paths.log_dir)
    logging_file = cfg.paths.log_dir / "clinic2cloud.log"
    assert logging_file.exists()
    home = cfg.paths.state_dir.parent
    modes = _modes(home)
    assert any(name.startswith("state/quarantine/") and name.endswith(".dcm") for name in modes)
    loose = {n: oct(m) for n, m in modes.items() if m & 0o077 and not n.startswith("machine")}
    assert not loose, f"readable by others: {loose}"
    delivered = {n: m for n, m in _modes(outbox_dir).items() if n != "."}
    assert delivered and all(m in (0o700, 0o600) for m in delivered.values()), delivered


def test_outbox_group_mode_is_applied(loose_umask: None, running_agent: StartAgent,
                                      export_dir: Path, outbox_dir: Path) -> None:
    running_agent(target_group_readable=True)
    write_series(export_dir / "s", 2)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    modes = {n: m for n, m in _modes(outbox_dir).items() if n != "."}
    dirs = {m for n, m in modes.items() if (outbox_dir / n).is_dir()}
    files = {m for n, m in modes.items() if (outbox_dir / n).is_file()}
    assert dirs == {0o750} and files == {0o640}


def test_site_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    key.write_text("ab" * 32)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"open to other users \(mode 0644\).*chmod 600"):
        site_secret(str(key), tmp_path / "installation.key")
    key.chmod(0o600)
    assert site_secret(str(key), tmp_path / "installation.key") == bytes.fromhex("ab" * 32)


def test_config_carrying_a_secret_must_be_private(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[target]\nkind = "azure"\ncontainer = "c"\n'
                   'connection_string = "AccountName=a;AccountKey=secret"\n')
    cfg.chmod(0o644)
    with pytest.raises(ConfigError, match=r"connection_string\] is a secret.*chmod 600"):
        load_config(cfg)
    cfg.chmod(0o600)
    assert load_config(cfg).target.connection_string
    plain = tmp_path / "plain.toml"
    plain.write_text('[watch]\nstable_seconds = 5\n')
    plain.chmod(0o644)  # no secret in it: readable is fine
    assert load_config(plain).watch.stable_seconds == 5


def _intruder() -> tuple[int, int]:
    """uid and gid of a second, unprivileged OS user (created once per machine)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating a second OS user needs root and useradd")
    import pwd

    try:
        entry = pwd.getpwnam(INTRUDER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", INTRUDER], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"useradd refused: {made.stderr.decode().strip()}")
        entry = pwd.getpwnam(INTRUDER)
    return entry.pw_uid, entry.pw_gid


#: Prints every path the caller can list (folders) or read a byte of (files).
_TRY_READ = ('for p in "$@"; do if [ -d "$p" ]; then ls "$p" >/dev/null 2>&1 && echo "$p"; '
             'else head -c1 "$p" >/dev/null 2>&1 && echo "$p"; fi; done; true')


def _as(uid: int, gid: int) -> Callable[[], None]:
    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return drop


def test_a_second_os_user_reads_none_of_the_state(
        loose_umask: None, running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        tmp_path: Path) -> None:
    uid, gid = _intruder()
    cfg = _run_one_quarantined_one_delivered(running_agent, export_dir, outbox_dir, tmp_path)
    # Let the intruder reach the folders above (as on a shared machine where /home is open).
    for p in [tmp_path, *tmp_path.parents]:
        if p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o011)
    home = cfg.paths.state_dir.parent
    targets = [str(p) for p in [*home.rglob("*"), *outbox_dir.rglob("*")]]
    assert any("quarantine" in t for t in targets) and any("ledger" in t for t in targets)
    control = tmp_path / "public.txt"  # proves the intruder reaches the folders at all
    control.write_text("anyone may read this")
    control.chmod(0o644)
    proc = subprocess.run(["/bin/sh", "-c", _TRY_READ, "sh", str(control), *targets],
                          capture_output=True, text=True, timeout=60, preexec_fn=_as(uid, gid))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(control)], f"the second user read: {proc.stdout}"


def test_an_unwritable_state_folder_ends_in_one_line(tmp_path: Path,
                                                    small_disk: Callable[..., Path]) -> None:
    disk = small_disk(4)
    (disk / "state").mkdir()
    (disk / "export").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[watch]\nfolder = "{disk / "export"}"\n'
                   f'[target]\npath = "{tmp_path / "outbox"}"\n')
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(disk), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--headless", "--config",
                           str(cfg)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clinic2cloud: "), proc.stderr
