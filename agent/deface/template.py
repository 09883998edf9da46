"""The defacing template: an average head with its regions, and where to find it.

``templates/head.nii.gz`` is an average head (int16), ``templates/labels.nii.gz`` a uint8
bit field, ``templates/weight.nii.gz`` the smooth replacement weight (uint8, 255 = fully
replaced) and ``templates/surface.nii.gz`` the signed distance to the template's skin
(int8, 0.25 mm, positive outside, clipped at +-31.75 mm), all on the same 2 mm MNI grid (see
``scripts/build_templates.py`` and ``templates/README.md`` for provenance). The bits are:

* :data:`FACE` - brow ridge to chin, cheek to cheek, with the air in front of the face;
* :data:`EARS` - both ears with the air around them;
* :data:`WRAP` - air behind the head where a phase-wrapped face can reappear;
* :data:`BRAIN` - the MNI152 brain;
* :data:`PROTECT` - the brain plus a safety margin: never written, whatever the other bits say.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import SimpleITK as sitk

from agent.errors import DefaceFailed

FACE = 1
EARS = 2
WRAP = 4
BRAIN = 8
PROTECT = 16
#: Bits whose voxels are replaced (unless PROTECT is also set).
REPLACE = FACE | EARS | WRAP

HEAD_FILE = "head.nii.gz"
LABELS_FILE = "labels.nii.gz"
WEIGHT_FILE = "weight.nii.gz"
SURFACE_FILE = "surface.nii.gz"
FILES = (HEAD_FILE, LABELS_FILE, WEIGHT_FILE, SURFACE_FILE)
ENV_VAR = "CLINIC2CLOUD_TEMPLATES"


def template_dirs() -> list[Path]:
    """Candidate template folders, in the order they are tried."""
    here = Path(__file__).resolve()
    candidates: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        candidates.append(Path(env))
    candidates.append(here.parents[1] / "data" / "templates")  # agent/data/templates
    candidates.append(here.parents[2] / "templates")  # <repo>/templates
    candidates.append(Path(sys.prefix) / "share" / "clinic2cloud" / "templates")  # wheel
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        candidates.append(Path(meipass) / "templates")
    return candidates


def find_templates() -> Path:
    """The first candidate folder holding every template file.

    Raises DefaceFailed (the series is quarantined rather than delivered with a face) when
    none does: the installation is broken and the message says how to fix it.
    """
    tried = template_dirs()
    for folder in tried:
        if all((folder / name).is_file() for name in FILES):
            return folder
    raise DefaceFailed(
        "the defacing template is missing (looked in "
        + ", ".join(str(p) for p in tried)
        + f"); reinstall Clinic2Cloud or set {ENV_VAR} to a folder holding "
        + ", ".join(FILES),
        code="deface-template",
    )


@dataclass(frozen=True, eq=False)  # hashed by identity: cached per loaded template
class Template:
    """The average head, its label bit field, replacement weight (0..1) and skin distance
    (mm, positive outside), all float32 except the labels (uint8), on one grid."""

    head: sitk.Image
    labels: sitk.Image
    folder: Path
    weight: sitk.Image
    surface: sitk.Image

    def label_array(self) -> np.ndarray:
        return sitk.GetArrayViewFromImage(self.labels)


@lru_cache(maxsize=4)
def load_template(folder: Path | None = None) -> Template:
    """Read (once per process) the template from ``folder`` or :func:`find_templates`."""
    folder = folder or find_templates()
    try:
        head = sitk.ReadImage(str(folder / HEAD_FILE), sitk.sitkFloat32)
        labels = sitk.ReadImage(str(folder / LABELS_FILE), sitk.sitkUInt8)
        weight = sitk.ReadImage(str(folder / WEIGHT_FILE), sitk.sitkFloat32) / 255.0
        surface = sitk.ReadImage(str(folder / SURFACE_FILE), sitk.sitkFloat32) / 4.0
    except RuntimeError as exc:
        raise DefaceFailed(
            f"the defacing template in {folder} cannot be read ({_first_line(exc)}); "
            "reinstall Clinic2Cloud",
            code="deface-template",
        ) from None
    if any(img.GetSize() != head.GetSize() for img in (labels, weight, surface)):
        raise DefaceFailed(f"the defacing template in {folder} is inconsistent; reinstall",
                           code="deface-template")
    for img in (labels, weight, surface):
        img.CopyInformation(head)
    return Template(head=head, labels=labels, folder=folder, weight=weight, surface=surface)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def derived(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """A cache (per template) of something derived from the template, made once: a
    caller arriving while another thread makes it waits for that result instead of making
    it again (:func:`warm_in_background` makes them while a volume is read and fitted)."""
    cached = lru_cache(maxsize=4)(fn)
    lock = threading.Lock()

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with lock:
            return cached(*args, **kwargs)  # type: ignore[arg-type]
    return call


_WARMED: set[int] = set()
_WARMED_LOCK = threading.Lock()


def warm_in_background(template: Template) -> None:
    """Start making, on a thread of its own and once per template, what every defacing
    derives from the template (its work-grid head and mask, its skin's distance field,
    the region maps, the head mask the fit is measured with): about half a CPU-second
    that otherwise runs between a volume's fit and its blend, on a second core meanwhile.
    Each is a deterministic function of the template: the same numbers whichever thread
    makes it first."""
    with _WARMED_LOCK:
        if id(template) in _WARMED:
            return
        _WARMED.add(id(template))
    threading.Thread(target=_warm, args=(template,), name="template-warm-up",
                     daemon=True).start()


def _warm(template: Template) -> None:
    from agent.deface import core, fitting, register

    try:
        register.template_work(template.head)
        register.template_field(template.surface)
        core.template_maps(template)
        fitting.template_head_mask(template)
    except (RuntimeError, ValueError, MemoryError, DefaceFailed):
        pass  # the defacing that needs it makes it again and reports what fails


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
