"""What a processing stage receives: one attempt at one series.

The pipeline (:mod:`agent.pipeline`) creates a :class:`SeriesWork` for a staged series and
hands it to each :class:`Stage` in turn - de-identify, deface, verify. A stage reads
``work.files``, writes its outputs under ``work.workdir`` and replaces ``work.files`` with
them. A stage that finds a problem with the series raises
:class:`~agent.errors.SeriesProblem` and the series is quarantined with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    from agent.sync.manifest import ManifestFields


@dataclass
class SeriesWork:
    """One attempt at one series. Holds no PHI: keys, pseudonyms and paths in the agent's own
    work area only."""

    #: Keyed hash of (Study Instance UID, Series Instance UID): how the ledger knows the series.
    key: str
    #: 1 for the first delivery of a series, 2 for the next one (files that came later) ...
    version: int
    #: The staged copies of the exported files. Never modified; the verifier reads them.
    source_files: list[Path]
    #: A private scratch folder for this attempt; stages write below it.
    workdir: Path
    #: The current outputs. Starts as ``source_files``; each stage replaces it.
    files: list[Path] = field(default_factory=list)
    #: Set by de-identification: the keyed pseudonyms that name the delivery.
    patient_pseudonym: str = ""
    study_pseudonym: str = ""
    series_pseudonym: str = ""
    modality: str = ""
    series_description: str = ""
    #: De-identification method codes applied (113100, 113102 ...).
    codes: list[str] = field(default_factory=list)
    #: The before/after face render, when the series was defaced.
    render: Path | None = None
    #: True when the defacing stage replaced the face.
    defaced: bool = False
    #: Audit events a stage wants recorded (event, detail without PHI); the pipeline writes
    #: them to the ledger after the stage returns, and empties the list.
    audit: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    #: Set by de-identification: output file name -> name of the staged copy it came from
    #: (so the manifest can say which delivered files are new or changed).
    source_of: dict[str, str] = field(default_factory=dict)
    #: The face decision for the record (manifest and audit log; no PHI): "decision"
    #: ("defaced" or "no-face"), "code" (agent.vocab.FaceCode) and "reason".
    face: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = list(self.source_files)

    @property
    def destination(self) -> str:
        """Relative delivery path: ``<site>/<patient>/<study>/<series>`` is built by the
        pipeline from the pseudonyms; this is the part below the site."""
        return f"{self.patient_pseudonym}/{self.study_pseudonym}/{self.series_pseudonym}"


class Stage(Protocol):
    """A processing step. Raise SeriesProblem to quarantine the series."""

    name: str

    def __call__(self, work: SeriesWork) -> None: ...


class ReadyFile(TypedDict):
    """One verified output: its name in the delivery and where it is in the work area."""

    path: str
    local: str


class Ready(TypedDict):
    """``ready.json``: what a verified series leaves for delivery, so that a restart
    delivers it without processing it again (written last, atomically)."""

    #: ``<site>/<patient>/<study>/<series>``: pseudonyms only.
    series_path: str
    files: list[ReadyFile]
    #: The manifest's fields of this series (see :class:`agent.sync.manifest.Manifest`).
    manifest: ManifestFields
    #: Why a series is delivered as it is without defacing ("" otherwise): the face
    #: decision's reason and code (agent.vocab.FaceCode), for the delivered row.
    note: NotRequired[str]
    note_code: NotRequired[str]
