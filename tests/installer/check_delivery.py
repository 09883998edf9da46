"""Check what an installed build delivered from tests/installer/head_series.py's series.

    python -m tests.installer.check_delivery OUT SOURCE [--expect-defaced] [--canary TEXT ...]

Checks, failing (exit 1) with one line per problem:

* exactly one delivered series, and its files match ``manifest.json`` (sizes, SHA-256);
* de-identification ran: Basic Profile code 113100 in the manifest and in every file,
  Patient Identity Removed = YES, and none of the planted canaries anywhere in any byte of
  any delivered file or path;
* defacing ran (``--expect-defaced``): the manifest says ``defaced``, code 113102 (Clean
  Recognizable Visual Features) is listed, and pixel data differ from the source's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from agent.sync.manifest import verify_folder
from tests.installer.head_series import CANARIES


def _volume(files: list[Path]) -> np.ndarray:
    dss = [pydicom.dcmread(p) for p in files]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array for d in dss]).astype(np.int32)


def _canaries(extra: tuple[str, ...]) -> list[bytes]:
    canaries = [v.encode() for v in (*CANARIES.values(), *extra)]
    return canaries + [c.replace(b"^", b" ") for c in canaries if b"^" in c]


def _identifiers_left(out: Path, canaries: list[bytes]) -> list[str]:
    """Canaries in any delivered path or file."""
    problems: list[str] = []
    for path in [*out.rglob("*")]:
        rel = str(path.relative_to(out))
        if any(c.decode() in rel for c in canaries):
            problems.append(f"identifier in a delivered path: {rel}")
        if path.is_file():
            data = path.read_bytes()
            problems += [f"identifier {c.decode()!r} left in {rel}" for c in canaries
                         if c in data]
    return problems


def _marked_deidentified(dicoms: list[Path]) -> list[str]:
    problems: list[str] = []
    for path in dicoms:
        ds = pydicom.dcmread(path)
        if ds.get("PatientIdentityRemoved") != "YES":
            problems.append(f"{path.name}: Patient Identity Removed is not YES")
        method = {item.CodeValue for item in ds.get("DeidentificationMethodCodeSequence", [])}
        if "113100" not in method:
            problems.append(f"{path.name}: no 113100 in Deidentification Method Code Sequence")
    return problems


def _defaced(manifest: dict[str, Any], codes: set[str], source: Path,
             dicoms: list[Path]) -> tuple[list[str], int]:
    """Problems with the defacing of the delivery, and the number of voxels changed."""
    problems: list[str] = []
    if manifest.get("defaced") is not True:
        problems.append("the manifest does not say the series was defaced")
    if "113102" not in codes:
        problems.append("manifest lacks code 113102 (Clean Recognizable Visual Features)")
    before = _volume(sorted(p for p in source.iterdir() if p.is_file()))
    after = _volume(dicoms)
    if before.shape != after.shape:
        return [*problems, f"volume shape changed: {before.shape} -> {after.shape}"], 0
    changed = int((before != after).sum())
    if changed < 1000:
        problems.append(f"only {changed} voxels changed: the face was not replaced")
    return problems, changed


def check(out: Path, source: Path, expect_defaced: bool,
          extra_canaries: tuple[str, ...] = ()) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    manifests = sorted(out.rglob("manifest.json"))
    if len(manifests) != 1:
        return [f"expected 1 delivered series, found {len(manifests)} manifests"], {}
    folder = manifests[0].parent
    problems += [f"manifest: {p}" for p in verify_folder(folder)]
    manifest = json.loads(manifests[0].read_text(encoding="utf-8"))
    codes = set(manifest.get("deidentification_codes", []))
    if "113100" not in codes:
        problems.append(f"manifest lacks the Basic Profile code 113100: {sorted(codes)}")
    files = [folder / f["path"] for f in manifest.get("files", [])]
    dicoms = [p for p in files if p.suffix.lower() != ".png" and p.is_file()]
    problems += _identifiers_left(out, _canaries(extra_canaries))
    problems += _marked_deidentified(dicoms)
    changed = 0
    if expect_defaced:
        more, changed = _defaced(manifest, codes, source, dicoms)
        problems += more
    info = {"files": len(files), "codes": sorted(codes), "defaced": manifest.get("defaced"),
            "voxels_changed": changed}
    return problems, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("source", type=Path)
    parser.add_argument("--expect-defaced", action="store_true")
    parser.add_argument("--canary", action="append", default=[],
                        help="another identifier planted in the source (repeatable)")
    args = parser.parse_args(argv)
    problems, info = check(args.out, args.source, args.expect_defaced, tuple(args.canary))
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    print(f"delivery check: {'ok' if not problems else 'FAILED'} {json.dumps(info)}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
