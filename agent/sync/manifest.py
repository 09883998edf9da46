"""The manifest: the document delivered last that lists every file of a series."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Required, TypedDict, cast

from agent import __version__
from agent.sync.base import DeliveryFile

FORMAT = "clinic2cloud-manifest/1"
_CHUNK = 1 << 20


class ManifestFile(TypedDict):
    """One delivered file: its path below the series folder, size and SHA-256."""

    path: str
    size: int
    sha256: str


class ManifestChanges(TypedDict):
    """What a later version changed since the version before it (agent/reexport.py):
    delivered file names of instances added or changed, and counts."""

    since_version: int | None
    added: list[str]
    changed: list[str]
    unchanged: int
    #: Instances of the earlier versions this version does not hold.
    not_in_this_version: int
    #: Identical copies of an instance found in the export (two folders): sent once.
    duplicate_copies_dropped: int
    #: Instances found twice with different content at once: the newest file was sent.
    conflicting_copies: int


class ManifestFields(TypedDict, total=False):
    """What the pipeline says about a series in its manifest: pseudonyms and codes only."""

    site: str
    patient: str
    study: str
    series: str
    modality: str
    #: De-identification method codes (CID 7050: 113100 Basic Profile, 113102 ...).
    deidentification_codes: list[str]
    defaced: bool
    #: Versions after the first: what changed since the version before.
    changes: ManifestChanges


class Manifest(ManifestFields, total=False):
    """The manifest document (``manifest.json``), delivered last as the commit marker."""

    format: Required[str]
    agent_version: Required[str]
    #: 1 for the first delivery of a series; grows with later files or a conflict.
    version: int
    #: The ledger's chain head when the series was delivered (ties the delivery to it).
    ledger_head: Required[str]
    content_sha256: Required[str]
    files: Required[list[ManifestFile]]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def describe_files(files: list[tuple[str, Path]],
                   known: Mapping[Path, tuple[int, str]] | None = None
                   ) -> tuple[DeliveryFile, ...]:
    """Size and SHA-256 of each (relative path, local file), sorted by relative path;
    ``known``: (size, SHA-256) of local files already read (not read again)."""
    out = []
    for rel, local in files:
        size, sha = (known or {}).get(local) or (local.stat().st_size, sha256_file(local))
        out.append(DeliveryFile(path=rel, local=local, size=size, sha256=sha))
    return tuple(sorted(out, key=lambda f: f.path))


def content_digest(files: tuple[DeliveryFile, ...]) -> str:
    """One hash over the relative paths and hashes: equal digests mean identical content."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\x00{f.sha256}\n".encode())
    return h.hexdigest()


def build_manifest(
    files: tuple[DeliveryFile, ...], *, ledger_head: str, **fields: Any
) -> Manifest:
    """The manifest document. ``fields`` are those of :class:`Manifest` (site, patient,
    study, series, version, modality, codes ...): pseudonyms and codes only."""
    unknown = set(fields) - set(Manifest.__annotations__)
    if unknown:
        raise TypeError(f"not manifest fields: {sorted(unknown)}")
    return cast(Manifest, {
        "format": FORMAT,
        "agent_version": __version__,
        **fields,
        "ledger_head": ledger_head,
        "content_sha256": content_digest(files),
        "files": [ManifestFile(path=f.path, size=f.size, sha256=f.sha256) for f in files],
    })


def with_version(manifest: Manifest, version: int) -> Manifest:
    """A copy of ``manifest`` for another version of the same delivery."""
    out = manifest.copy()
    out["version"] = version
    return out


def dumps(manifest: Manifest) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def same_files(manifest: Manifest | dict[str, Any], files: tuple[DeliveryFile, ...]) -> bool:
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
