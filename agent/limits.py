"""What a series may cost, checked before it is read: ``[limits]``.

A file whose header promises gigabytes of pixels (a real one, or a sparse file crafted to
look like one) would take the memory of the workstation when decoded, and again at every
restart. So sizes are checked twice before any pixel is read: the files' sizes on disk
before the series is copied out of the export folder, and the decoded size the headers
announce before the stages run. A series over a limit is quarantined with a reason that
says which limit, and how to raise it when the series is expected to be that large.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pydicom

from agent.config import LimitsConfig
from agent.dicomfiles import expected_native_length
from agent.diskspace import human
from agent.errors import SeriesProblem
from agent.headers import check_header
from agent.quickread import pixel_bytes
from agent.series import FileState
from agent.vocab import ProblemCode

_MB = 1024 * 1024


def _too_large(what: str, size: int, limit_mb: int, key: str) -> SeriesProblem:
    return SeriesProblem(
        f"{what} is {human(size)}, more than the limit of {human(limit_mb * _MB)}; it was "
        f"kept back before being read. If series this large are expected, raise [limits] "
        f"{key} and retry it.", code=ProblemCode.TOO_LARGE)


def check_sizes(files: Mapping[str, FileState], limits: LimitsConfig) -> None:
    """Sizes on disk, before anything is copied."""
    for state in files.values():
        if state.size > limits.max_file_mb * _MB:
            raise _too_large("a file of the series", state.size, limits.max_file_mb,
                             "max_file_mb")
    total = sum(s.size for s in files.values())
    if total > limits.max_series_mb * _MB:
        raise _too_large("the series", total, limits.max_series_mb, "max_series_mb")


#: What is read of a file to find its announced pixel size in one walk (:mod:`agent.quickread`);
#: a longer header is parsed by pydicom.
_HEADER_BYTES = 256 << 10


def _announced(path: Path, index: int, count: int) -> int | None:
    """Decoded pixel bytes the header of ``path`` (file ``index`` of ``count``) announces;
    None if it cannot be read (the stages report that). One walk over the header where the
    file is ordinary (a pydicom parse of each file was most of the main process's time
    before the stages). An unusual file is parsed by pydicom, and its header checked on
    that parse (:func:`agent.headers.check_header`): damaged files are unusual ones, as
    the walk accepts only DICOM's value representations and whole numbers."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_BYTES)
            whole = len(head) < _HEADER_BYTES or not fh.read(1)
    except OSError:
        return None
    size = pixel_bytes(head, whole)
    if size is not None:
        return size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 -- unreadable headers are the stages' to report
        return None
    check_header(ds, index, count)
    return expected_native_length(ds)


def check_decoded_size(files: Sequence[Path], limits: LimitsConfig) -> None:
    """The decoded size the headers announce (compressed files decode larger than they
    are), before any stage reads a pixel; for an unusual file, also that its header can
    be used at all."""
    total = 0
    for index, path in enumerate(files):
        size = _announced(path, index, len(files))
        if size is None:
            continue
        if size > limits.max_file_mb * _MB:
            raise _too_large("the image data of a file of the series", size,
                             limits.max_file_mb, "max_file_mb")
        total += size
    if total > limits.max_series_mb * _MB:
        raise _too_large("the image data of the series", total, limits.max_series_mb,
                         "max_series_mb")
