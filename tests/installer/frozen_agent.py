"""Run an installed ``clinic2cloud run`` (the long-lived agent) and check what it delivers.

    python -m tests.installer.frozen_agent azure BINARY   # headless, into Azurite
    python -m tests.installer.frozen_agent tray BINARY    # tray icon (needs DISPLAY), no
                                                          # stdout/stderr, folder target

Both start the agent with its own ``CLINIC2CLOUD_HOME``, drop a small identifiable MR series
into the watched folder, wait for its delivery (manifest last), stop the agent with SIGTERM
and require a clean exit. ``azure`` also runs ``doctor`` against the emulator first and keeps
the storage secret in a 0600 file (``[target] secret_file``), as a fleet would. Exit code 0
when every check passed; prints the seconds from drop to delivered manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PATIENT_ID, PATIENT_NAME, manifests, write_series
from tests.waiting import wait_until


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    return wait_until(predicate, timeout, step=0.25)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def _config(home: Path, export: Path, target: str) -> None:
    # Defacing off: the frozen defacing is checked by `process` on Colin27 (ci-linux.sh);
    # the 5-slice series dropped here is too short to show whether it holds a face, so with
    # defacing on it rightly waits for a series of its study that can tell.
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        f'[watch]\nfolder = "{export}"\nstable_seconds = 1\n\n[deface]\nenabled = false\n\n'
        f'{target}', encoding="utf-8")


def run_azure(binary: str, work: Path) -> list[str]:
    from tests.sync.azurite import Azurite

    problems: list[str] = []
    server = Azurite(work / "azurite")
    server.start()
    try:
        container = server.new_container()
        secret = work / "target.secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, server.connection_string.encode())
        os.close(fd)
        home, export = work / "home-azure", work / "export-azure"
        export.mkdir()
        _config(home, export, f'[target]\nkind = "azure"\ncontainer = "{container}"\n'
                              f'secret_file = "{secret}"\n')
        env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
        doctor = subprocess.run([binary, "doctor"], env=env, capture_output=True, text=True,
                                timeout=60)
        if doctor.returncode != 0:
            problems.append(f"doctor against Azurite failed: {doctor.stdout}{doctor.stderr}")
        proc = subprocess.Popen([binary, "run", "--headless"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = server.service().get_container_client(container)

        def manifests() -> list[str]:
            return [b.name for b in client.list_blobs() if b.name.endswith("/manifest.json")]

        try:
            time.sleep(1.0)
            start = time.monotonic()
            write_series(export, 5)
            delivered = _wait(lambda: bool(manifests()), 90)
            seconds = time.monotonic() - start
        finally:
            code = _stop(proc)
        if code != 0:
            problems.append(f"the agent exited {code} on SIGTERM")
        if not delivered:
            return problems + ["no manifest.json blob within 90 s"]
        name = manifests()[0]
        prefix = name[: -len("manifest.json")]
        manifest = json.loads(client.download_blob(name).readall())
        for entry in manifest["files"]:
            data = client.download_blob(prefix + entry["path"]).readall()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                problems.append(f"blob {entry['path']} differs from the manifest")
            if PATIENT_NAME.encode() in data or PATIENT_ID.encode() in data:
                problems.append(f"blob {entry['path']} holds a planted identifier")
        print(f"azure: {len(manifest['files'])} blobs + manifest delivered {seconds:.1f} s "
              f"after the drop")
    finally:
        server.stop()
    return problems


def run_tray(binary: str, work: Path) -> list[str]:
    problems: list[str] = []
    if not os.environ.get("DISPLAY"):
        return ["tray: no DISPLAY (run under xvfb-run)"]
    tray_host = None
    if shutil.which("trayer"):  # a system tray for the icon to dock into
        tray_host = subprocess.Popen(["trayer", "--height", "24"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    home, export, outbox = work / "home-tray", work / "export-tray", work / "outbox-tray"
    export.mkdir()
    outbox.mkdir()
    _config(home, export, f'[target]\npath = "{outbox}"\n')
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    # Started with stdout and stderr *closed* (sys.stdout/sys.stderr are None), as the
    # windowed build starts from autostart: the tray agent must run all the same.
    proc = subprocess.Popen(["sh", "-c", 'exec "$0" run >&- 2>&-', binary], env=env)
    log = home / "logs" / "clinic2cloud.log"
    try:
        shown = _wait(lambda: log.is_file() and "tray icon shown" in log.read_text(), 30)
        start = time.monotonic()
        write_series(export, 5)
        delivered = _wait(lambda: any(manifests(outbox)), 90)
        seconds = time.monotonic() - start
    finally:
        code = _stop(proc)
        if tray_host is not None:
            tray_host.terminate()
            tray_host.wait(timeout=10)
    if not shown:
        problems.append("no tray icon: " + (log.read_text()[-2000:] if log.is_file() else ""))
    if not delivered:
        problems.append("no delivery within 90 s")
    if code != 0:
        problems.append(f"the agent exited {code} on SIGTERM")
    if not problems:
        backend = log.read_text().split("tray icon shown")[1].split()[0].strip("()")
        print(f"tray: icon shown ({backend}), series delivered {seconds:.1f} s after the drop")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["azure", "tray"])
    parser.add_argument("binary")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="c2c-frozen-") as tmp:
        run = run_azure if args.scenario == "azure" else run_tray
        problems = run(args.binary, Path(tmp))
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
