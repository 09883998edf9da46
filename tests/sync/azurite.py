"""Helpers for the sync tests: a real Azurite blob service, configs and deliveries."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from azure.storage.blob import BlobServiceClient, ContainerClient

from agent.config import Config, TargetConfig, replace
from agent.paths import AgentPaths
from agent.sync.base import Delivery
from agent.sync.manifest import Manifest, build_manifest, describe_files

#: Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    """One azurite-blob (or azurite-queue) process on loopback, restartable on the same port
    and location."""

    def __init__(self, location: Path, port: int | None = None, service: str = "blob") -> None:
        self.location = location
        self.port = port or free_port()
        self.service_name = service
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.url};"
        )

    def start(self, timeout: float = 30.0) -> None:
        self.location.mkdir(parents=True, exist_ok=True)
        log = open(self.location / "azurite.log", "ab")
        self.proc = subprocess.Popen(
            [
                f"azurite-{self.service_name}",
                f"--{self.service_name}Host", "127.0.0.1",
                f"--{self.service_name}Port", str(self.port),
                "--location", str(self.location), "--skipApiVersionCheck", "--loose",
                "--silent", "--disableTelemetry",
            ],
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite-{self.service_name} exited with "
                                   f"{self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"azurite-{self.service_name} did not start listening in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string)

    def new_container(self) -> str:
        name = f"c{uuid.uuid4().hex[:20]}"
        self.service().create_container(name)
        return name



def azure_config(root: Path, server: Azurite, container: str, **target: object) -> Config:
    """A config delivering into ``container`` of ``server``, state under ``root``."""
    fields: dict[str, object] = {
        "kind": "azure",
        "container": container,
        "connection_string": server.connection_string,
    }
    fields.update(target)
    cfg = Config(paths=AgentPaths.under(root), target=TargetConfig(**fields))  # type: ignore[arg-type]
    return replace(cfg, site_name="SITE1")


def make_delivery(
    root: Path,
    sizes: list[int],
    *,
    series_path: str = "SITE1/PAT-7f3a/STU-91c2/SER-04",
    version: int = 1,
    seed: int = 0,
) -> Delivery:
    """Files of the given sizes with seeded random content, described and manifested."""
    folder = root / f"outbox-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    files = []
    rng = __import__("random").Random(seed)
    for i, size in enumerate(sizes):
        local = folder / f"IM{i:05d}.dcm"
        local.write_bytes(rng.randbytes(size))
        files.append((f"IM{i:05d}.dcm", local))
    described = describe_files(files)
    site, patient, study, series = series_path.split("/")
    manifest = build_manifest(
        described, ledger_head="0" * 64, site=site, patient=patient, study=study,
        series=series, version=version, modality="MR",
    )
    return Delivery(
        series_key=uuid.uuid4().hex, series_path=series_path, version=version,
        files=described, manifest=manifest,
    )


def blobs_under(server: Azurite, container: str, prefix: str = "") -> dict[str, object]:
    cc: ContainerClient = server.service().get_container_client(container)
    return {b.name: b for b in cc.list_blobs(name_starts_with=prefix or None,
                                               include=["metadata"])}


def download(server: Azurite, container: str, name: str) -> bytes:
    return server.service().get_blob_client(container, name).download_blob().readall()


def assert_delivered(server: Azurite, container: str, location: str) -> Manifest:
    """The manifest at ``location`` lists exactly the blobs there, each whole and with a
    correct Content-MD5; returns the manifest."""
    blobs = blobs_under(server, container, location + "/")
    manifest = json.loads(download(server, container, f"{location}/manifest.json"))
    listed = {f"{location}/{e['path']}": e for e in manifest["files"]}
    assert set(blobs) == set(listed) | {f"{location}/manifest.json"}
    for name, blob in blobs.items():
        data = download(server, container, name)
        md5 = blob.content_settings.content_md5  # type: ignore[attr-defined]
        assert md5 is not None and bytes(md5) == hashlib.md5(data).digest(), name
        assert not blob.metadata, name  # type: ignore[attr-defined]
        if name in listed:
            assert hashlib.sha256(data).hexdigest() == listed[name]["sha256"]
            assert len(data) == listed[name]["size"]
    return manifest
