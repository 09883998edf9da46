"""``clinic2cloud-reference-step INPUT OUTPUT``: the reference step (see the package doc).

Writes ``OUTPUT/seg/<uid>.dcm`` (the brain mask, DICOM SEG), ``OUTPUT/sr/<uid>.dcm`` (the
brain volume, a TID 1500 measurement report) and ``OUTPUT/report.json`` (the numbers, with
pseudonyms only). Exit 0 on success, 3 when the input is not a volume it can process, 1 on
an unexpected error; a message on stderr says why.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from clinic2cloud_worker import __version__
from clinic2cloud_worker.reference.brainmask import PLAUSIBLE_ML, brain_mask
from clinic2cloud_worker.reference.objects import make_seg, make_sr, read_series


def run(input_dir: Path, output_dir: Path) -> dict[str, object]:
    started = time.monotonic()
    series = read_series(input_dir)
    result = brain_mask(series.image)
    seg = make_seg(series, result.mask)
    sr = make_sr(series, seg, result.volume_ml)
    for folder, ds in (("seg", seg), ("sr", sr)):
        (output_dir / folder).mkdir(parents=True, exist_ok=True)
        ds.save_as(output_dir / folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    report = {
        "step": "clinic2cloud-reference-step", "version": __version__,
        "brain_volume_ml": round(result.volume_ml, 1),
        "plausible": result.plausible, "plausible_range_ml": list(PLAUSIBLE_ML),
        "slices": len(series.datasets), "seconds": round(time.monotonic() - started, 2),
        "seg": f"seg/{seg.SOPInstanceUID}.dcm", "sr": f"sr/{sr.SOPInstanceUID}.dcm",
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n",
                                            encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: clinic2cloud-reference-step INPUT_FOLDER OUTPUT_FOLDER", file=sys.stderr)
        return 2
    try:
        report = run(Path(args[0]), Path(args[1]))
    except ValueError as exc:
        print(f"clinic2cloud-reference-step: {exc}", file=sys.stderr)
        return 3
    print(f"brain volume {report['brain_volume_ml']} mL from {report['slices']} slices "
          f"in {report['seconds']} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
