"""The whole agent delivering to a real Azurite: the pipeline and the Azure target together."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from agent.config import Config
from agent.main import Agent
from agent.status import AgentState
from agent.sync.azure import AzureTarget
from tests.conftest import PATIENT_ID, PATIENT_NAME, write_series
from tests.waiting import wait_until

from .azurite import Azurite, assert_delivered, blobs_under


def _manifests(server: Azurite, container: str) -> list[str]:
    return [n for n in blobs_under(server, container) if n.endswith("/manifest.json")]


def test_agent_delivers_series_to_blob_storage(make_config: Callable[..., Config],
                                               azurite: Azurite, export_dir: Path) -> None:
    container = azurite.new_container()
    agent = Agent(make_config(target_kind="azure", target_container=container,
                              target_connection_string=azurite.connection_string))
    agent.start()
    try:
        write_series(export_dir / PATIENT_NAME, 3)
        assert wait_until(lambda: len(_manifests(azurite, container)) == 1, timeout=60)
    finally:
        agent.stop()
    [name] = _manifests(azurite, container)
    location = name.rsplit("/", 1)[0]
    manifest = assert_delivered(azurite, container, location)
    assert len(manifest["files"]) == 3
    names = " ".join(blobs_under(azurite, container))
    for secret in (PATIENT_ID, "Canarysson", "Wilhelmina"):
        assert secret not in names
    assert json.dumps(manifest).find(PATIENT_ID) == -1


def test_storage_outage_shows_offline_and_resumes(make_config: Callable[..., Config],
                                                  azurite_factory: Callable[..., Azurite],
                                                  export_dir: Path, tmp_path: Path) -> None:
    server = azurite_factory(tmp_path / "az")
    container = server.new_container()
    server.stop(signal.SIGKILL)
    cfg = make_config(target_kind="azure", target_container=container,
                      target_connection_string=server.connection_string)
    agent = Agent(cfg, target=AzureTarget(cfg, retry_budget=2.0))
    agent.start()
    try:
        write_series(export_dir, 2)
        assert wait_until(lambda: agent.status().state == AgentState.OFFLINE, timeout=60)
        server.start()
        if not server.service().get_container_client(container).exists():
            server.service().create_container(container)  # an in-memory Azurite forgets it
        assert wait_until(lambda: len(_manifests(server, container)) == 1, timeout=90)
        assert wait_until(lambda: agent.status().state == AgentState.IDLE, timeout=10)
    finally:
        agent.stop()


def test_doctor_passes_and_explains_a_wrong_key(azurite: Azurite, tmp_path: Path,
                                                export_dir: Path) -> None:
    import os
    import subprocess
    import sys

    container = azurite.new_container()

    def doctor(connection_string: str) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[watch]\nfolder = "{export_dir}"\n[target]\nkind = "azure"\n'
                       f'container = "{container}"\nconnection_string = "{connection_string}"\n')
        cfg.chmod(0o600)  # a config holding a secret must be the user's alone
        env = {**os.environ, "CLINIC2CLOUD_HOME": str(tmp_path / "home")}
        return subprocess.run([sys.executable, "-m", "agent", "doctor", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=120, env=env)

    good = doctor(azurite.connection_string)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all checks passed" in good.stdout
    wrong = azurite.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    bad = doctor(wrong)
    assert bad.returncode == 1
    assert "PROBLEM" in bad.stdout
    key = wrong.split("AccountKey=")[1].split(";")[0]
    assert key[:12] not in bad.stdout + bad.stderr  # the secret is never echoed


def test_agent_killed_mid_upload_resumes_exactly_once(azurite: Azurite, tmp_path: Path,
                                                     export_dir: Path) -> None:
    """`clinic2cloud run` killed with SIGKILL while uploading, then started again: the
    series arrives whole, once, and what the service already held is not sent again."""
    import os
    import sqlite3
    import subprocess
    import sys
    import time

    container = azurite.new_container()
    home = tmp_path / "home"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[watch]\nfolder = "{export_dir}"\nstable_seconds = 0.5\n'
        f'[target]\nkind = "azure"\ncontainer = "{container}"\n'
        f'connection_string = "{azurite.connection_string}"\nmax_mbps = 0.5\n'
        "[deface]\nenabled = false\n")
    cfg.chmod(0o600)  # a config holding a secret must be the user's alone
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless",
                                 "--config", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def committed() -> int:
        db = home / "state" / "uploads.sqlite3"
        if not db.exists():
            return 0
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                return int(con.execute("SELECT COUNT(*) FROM uploads WHERE state = 1")
                           .fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:
            return 0

    write_series(export_dir, 60)
    proc = start()
    try:
        assert wait_until(lambda: committed() >= 10, timeout=90)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _manifests(azurite, container) == []  # killed before the commit marker
    already = committed()
    assert 10 <= already < 60
    proc = start()
    try:
        assert wait_until(lambda: len(_manifests(azurite, container)) == 1, timeout=120)
        time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(10)
    [name] = _manifests(azurite, container)
    manifest = assert_delivered(azurite, container, name.rsplit("/", 1)[0])
    files = manifest["files"]
    assert len(files) == 60
    assert len(blobs_under(azurite, container)) == 61  # no stray or duplicate blobs
    total = sum(f["size"] for f in files)
    con = sqlite3.connect(home / "state" / "ledger.sqlite3")
    sent = [json.loads(d)["bytes"] for (d,) in
            con.execute("SELECT detail FROM audit WHERE event = 'confirmed'")]
    con.close()
    assert len(sent) == 1
    # Only what was not confirmed before the kill is sent again: the missing files and at
    # most the 4 (concurrency) that were in flight.
    biggest = max(f["size"] for f in files)
    assert sent[0] <= (60 - already + 4) * biggest
    assert sent[0] < total
