"""The target interface and the records that cross it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.sync.manifest import Manifest

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class DeliveryFile:
    """One file of a delivery: where it is now, and where it goes (relative to the series)."""

    path: str
    local: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Delivery:
    """A de-identified series ready to leave.

    ``series_path`` (``<site>/<patient>/<study>/<series>``) is made of pseudonyms only.
    ``version`` is 1 for the first delivery of a series and grows when files arrive later;
    targets put versions after the first in ``<series_path>.v<version>``.
    ``manifest`` is the document written last, as the commit marker; it lists ``files``.
    ``linkable`` says the local files are the agent's own outputs and never change again
    (they are only removed): a target on the same filesystem may hard-link them.
    """

    series_key: str
    series_path: str
    version: int
    files: tuple[DeliveryFile, ...]
    manifest: Manifest = field(default_factory=lambda: _empty_manifest())
    linkable: bool = False

    @property
    def location(self) -> str:
        return self.series_path if self.version <= 1 else f"{self.series_path}.v{self.version}"


@dataclass(frozen=True)
class Receipt:
    """What the target confirmed: every file and the manifest are in place at ``location``."""

    location: str
    #: True when identical content was already there (a redelivery after a crash, say).
    already_present: bool = False
    bytes_sent: int = 0


class Target(Protocol):
    """Where series are delivered. Implementations convert their library's errors into
    :class:`~agent.errors.TargetUnavailable` (retry later),
    :class:`~agent.errors.CredentialsError` (stop and tell) or
    :class:`~agent.errors.SeriesProblem`."""

    #: Human description for status and logs (no secrets).
    description: str

    def deliver(self, delivery: Delivery) -> Receipt:
        """Deliver every file, then the manifest, verified. Idempotent for identical content."""
        ...

    def check(self) -> list[str]:
        """Problems with the target, as sentences an administrator can act on (doctor)."""
        ...

    def close(self) -> None: ...


def _empty_manifest() -> Manifest:
    from agent.sync.manifest import FORMAT, Manifest

    return Manifest(format=FORMAT, agent_version="", ledger_head="", content_sha256="",
                    files=[])
