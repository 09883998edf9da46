"""Sending DICOM objects to a PACS (C-STORE SCU), with retries and a state per object.

:func:`send_files` is what the results loop calls: it never raises for what the network
or the PACS does; each object ends in one :class:`ObjectState` with the last DIMSE status
and a sentence saying what to do. Objects are sent as stored (their transfer syntax is
proposed first; uncompressed ones may also go as Explicit/Implicit VR Little Endian).
Transient faults (PACS out of reach, association rejected or aborted, "out of resources")
are retried with backoff; a failure status that will not change on retry ends the object
``refused`` at once.

:func:`echo` is the C-ECHO that ``doctor`` uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from agent.dicomnode.remote import RemoteNode
from agent.errors import TargetUnavailable

log = logging.getLogger(__name__)

_MAX_CONTEXTS = 120   # PS3.8 allows 128 presentation contexts per association
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class ObjectState(StrEnum):
    """Where one object is. SENT, REFUSED, FAILED and UNREADABLE are endings."""

    PENDING = "pending"
    #: The PACS answered success (or a warning, kept in ``message``).
    SENT = "sent"
    #: The PACS answered a failure that retrying will not change (it does not take this
    #: kind of object, or says the data set is wrong).
    REFUSED = "refused"
    #: Not sent after every attempt: the PACS was out of reach, refused the association,
    #: or was out of resources. Try again later.
    FAILED = "failed"
    #: Not a DICOM file that can be sent.
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ObjectResult:
    path: Path
    state: ObjectState
    #: The last C-STORE status the PACS answered (None: it never answered).
    status: int | None = None
    attempts: int = 0
    message: str = ""


@dataclass(frozen=True)
class SendReport:
    """One result per file, in the order given."""

    node: str
    results: tuple[ObjectResult, ...] = field(default_factory=tuple)

    @property
    def sent(self) -> list[ObjectResult]:
        return [r for r in self.results if r.state == ObjectState.SENT]

    @property
    def not_sent(self) -> list[ObjectResult]:
        return [r for r in self.results if r.state != ObjectState.SENT]

    @property
    def all_sent(self) -> bool:
        return all(r.state == ObjectState.SENT for r in self.results)


@dataclass
class _Item:
    path: Path
    sop_class: str = ""
    syntax: str = ""
    state: ObjectState = ObjectState.PENDING
    status: int | None = None
    attempts: int = 0
    message: str = ""

    def end(self, state: ObjectState, message: str, status: int | None = None) -> None:
        self.state, self.message = state, message
        if status is not None:
            self.status = status


def _ae(node: RemoteNode, timeout: float) -> AE:
    ae = AE(ae_title=node.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)  # it logs object values
    return ae


def _associate(ae: AE, node: RemoteNode) -> Any:
    tls = (node.tls, node.host) if node.tls is not None else None
    return ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls)


def echo(node: RemoteNode, *, timeout: float = 10.0) -> float:
    """C-ECHO ``node``; returns the round trip in seconds. Raises TargetUnavailable."""
    ae = _ae(node, timeout)
    ae.add_requested_context(Verification)
    t0 = time.monotonic()
    assoc = _associate(ae, node)
    if not assoc.is_established:
        raise TargetUnavailable(_no_association(assoc, node), title="PACS out of reach")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code != 0:
        raise TargetUnavailable(f"the PACS {node} did not answer the C-ECHO "
                                f"(status {code:#06x})" if code >= 0 else
                                f"the PACS {node} did not answer the C-ECHO in time",
                                title="PACS out of reach")
    return time.monotonic() - t0


def _no_association(assoc: Any, node: RemoteNode) -> str:
    if assoc.is_rejected:
        return (f"the PACS {node} rejected the association: check that it knows this "
                f"node's AE title ({node.calling_ae_title}) and address, and that "
                f"{node.ae_title} is its AE title")
    return (f"the PACS {node} cannot be reached (no answer on {node.host} port "
            f"{node.port}); check the address, the port and the network")


def send_files(files: Iterable[Path], node: RemoteNode, *, attempts: int = 3,
               backoff_seconds: float = 2.0, timeout: float = 30.0,
               stop: threading.Event | None = None) -> SendReport:
    """Send every file to ``node``; each ends SENT, REFUSED, FAILED or UNREADABLE.

    ``attempts`` rounds at most (each a new association, for what is still pending),
    ``backoff_seconds`` doubling between them; ``stop`` set cuts the waiting short (what
    is left is FAILED, to be sent another time).
    """
    items = [_Item(Path(f)) for f in files]
    for item in items:
        _read(item)
    stop = stop or threading.Event()
    for attempt in range(1, max(1, attempts) + 1):
        pending = [i for i in items if i.state == ObjectState.PENDING]
        if not pending or stop.is_set():
            break
        if attempt > 1 and stop.wait(backoff_seconds * 2 ** (attempt - 2)):
            break
        for batch in _batches(pending):
            _send_batch(batch, node, timeout, stop)
    for item in items:
        if item.state == ObjectState.PENDING:
            item.state = ObjectState.FAILED
            item.message = item.message or "not sent; try again later"
    report = SendReport(str(node), tuple(
        ObjectResult(i.path, i.state, i.status, i.attempts, i.message) for i in items))
    log.info("sent %d of %d objects to %s", len(report.sent), len(items), node)
    return report


def _read(item: _Item) -> None:
    try:
        ds = pydicom.dcmread(item.path, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID"])
        item.sop_class = str(ds.get("SOPClassUID", "") or
                             ds.file_meta.get("MediaStorageSOPClassUID", ""))
        item.syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or ImplicitVRLittleEndian)
    except Exception as exc:  # noqa: BLE001 - whatever the file is, it is not sendable
        item.end(ObjectState.UNREADABLE, f"not a DICOM file that can be sent "
                 f"({type(exc).__name__})")
        return
    if not item.sop_class:
        item.end(ObjectState.UNREADABLE, "the file names no SOP class; it cannot be sent")


def _batches(items: list[_Item]) -> list[list[_Item]]:
    """Group so that one association never proposes more contexts than allowed."""
    keys: list[tuple[str, str]] = []
    for i in items:
        if (i.sop_class, i.syntax) not in keys:
            keys.append((i.sop_class, i.syntax))
    out = []
    for start in range(0, len(keys), _MAX_CONTEXTS):
        chunk = set(keys[start:start + _MAX_CONTEXTS])
        out.append([i for i in items if (i.sop_class, i.syntax) in chunk])
    return out


def _send_batch(batch: list[_Item], node: RemoteNode, timeout: float,
                stop: threading.Event) -> None:
    ae = _ae(node, timeout)
    for sop_class, syntax in {(i.sop_class, i.syntax) for i in batch}:
        offer = [syntax] + [str(ts) for ts in _NATIVE if syntax in _NATIVE and ts != syntax]
        ae.add_requested_context(sop_class, offer)
    try:
        assoc = _associate(ae, node)
    except (OSError, RuntimeError, ValueError) as exc:
        for i in batch:
            i.attempts += 1
            i.message = f"the PACS {node} could not be reached ({type(exc).__name__})"
        return
    if not assoc.is_established:
        _not_associated(batch, assoc, node)
        return
    try:
        for item in batch:
            if stop.is_set() or not assoc.is_established:
                break
            _store_one(assoc, item, node)
    finally:
        if assoc.is_established:
            assoc.release()


def _not_associated(batch: list[_Item], assoc: Any, node: RemoteNode) -> None:
    refused = bool(assoc.is_aborted and assoc.rejected_contexts)
    for i in batch:
        i.attempts += 1
        if refused:  # it answered, and takes none of these kinds of object
            i.end(ObjectState.REFUSED, f"the PACS {node} does not accept this kind of "
                  f"object (SOP class {i.sop_class}, transfer syntax "
                  f"{UID(i.syntax).name}); ask its administrator to allow it")
        elif assoc.is_rejected:  # a rejection is its answer: asking again changes nothing
            i.end(ObjectState.FAILED, _no_association(assoc, node))
        else:
            i.message = _no_association(assoc, node)


def _store_one(assoc: Any, item: _Item, node: RemoteNode) -> None:
    item.attempts += 1
    try:
        ds = pydicom.dcmread(item.path)
    except Exception as exc:  # noqa: BLE001 - a file that changed under us
        item.end(ObjectState.UNREADABLE, f"the file could not be read ({type(exc).__name__})")
        return
    try:
        rsp = assoc.send_c_store(ds)
    except ValueError:
        item.end(ObjectState.REFUSED, f"the PACS {node} does not accept this kind of object "
                 f"(SOP class {item.sop_class}, transfer syntax {UID(item.syntax).name})")
        return
    except (OSError, RuntimeError) as exc:
        item.message = f"the association broke while sending ({type(exc).__name__})"
        return
    code = int(getattr(rsp, "Status", -1)) if rsp else -1
    item.status = code if code >= 0 else item.status
    if code == 0x0000:
        item.end(ObjectState.SENT, "")
    elif code in (0xB000, 0xB006, 0xB007):
        item.end(ObjectState.SENT, f"the PACS stored it with a warning (status {code:#06x})")
    elif code < 0:
        item.message = f"the PACS {node} did not answer in time"
    elif 0xA700 <= code <= 0xA7FF:
        item.message = f"the PACS {node} is out of resources (status {code:#06x}); retrying"
    else:
        item.end(ObjectState.REFUSED, f"the PACS {node} refused the object (status "
                 f"{code:#06x}); ask its administrator why", code)
