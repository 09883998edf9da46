"""The manifest: the document delivered last that lists every file of a series."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agent import __version__
from agent.sync.base import DeliveryFile

FORMAT = "clinic2cloud-manifest/1"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def describe_files(files: list[tuple[str, Path]]) -> tuple[DeliveryFile, ...]:
    """Size and SHA-256 of each (relative path, local file), sorted by relative path."""
    out = [
        DeliveryFile(path=rel, local=local, size=local.stat().st_size, sha256=sha256_file(local))
        for rel, local in files
    ]
    return tuple(sorted(out, key=lambda f: f.path))


def content_digest(files: tuple[DeliveryFile, ...]) -> str:
    """One hash over the relative paths and hashes: equal digests mean identical content."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\x00{f.sha256}\n".encode())
    return h.hexdigest()


def build_manifest(
    files: tuple[DeliveryFile, ...], *, ledger_head: str, **fields: Any
) -> dict[str, Any]:
    """The manifest document. ``fields`` (site, patient, study, series, version, modality,
    codes ...) must hold pseudonyms and codes only."""
    return {
        "format": FORMAT,
        "agent_version": __version__,
        **fields,
        "ledger_head": ledger_head,
        "content_sha256": content_digest(files),
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
    }


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def same_files(manifest: dict[str, Any], files: tuple[DeliveryFile, ...]) -> bool:
    """Whether a delivered manifest lists exactly these files with these hashes."""
    listed = {(f["path"], f["sha256"]) for f in manifest.get("files", [])}
    return listed == {(f.path, f.sha256) for f in files}


def verify_folder(folder: Path) -> list[str]:
    """Check a delivered folder against its manifest; the problems found (empty: all good)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"manifest unreadable: {exc}"]
    problems = []
    for entry in manifest.get("files", []):
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"missing: {entry['path']}")
        elif path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"content differs: {entry['path']}")
    return problems
