"""The DICOM node: a Storage SCP (and Verification SCP) that PACS and viewers send to.

Who may send is decided before anything is received: the calling address (allowed
networks) when the connection is accepted, the calling and called AE titles at
association. The rest is refused: an A-ASSOCIATE-RJ for titles and a full node (the
sender retries later), a closed connection for addresses; each refusal is counted per
caller for the status views.

Every storage SOP class is accepted with every transfer syntax pydicom knows, and the
data set is kept exactly as received (compressed ones stay compressed). An instance is
acknowledged only once it is a complete, parseable DICOM file fsynced into the intake
(:mod:`agent.dicomnode.intake`): a crash after "success" loses nothing. The intake is
watched by a second :class:`~agent.watcher.ExportWatcher` with the export folder's rules
(quiet time, completeness), so received series enter the same pipeline and ledger; the
release of an association asks it to look at once.

Bounds: at most ``max_associations`` associations, a few more connections than that
before they are turned away unread, idle peers dropped after ``timeout_seconds``, data
sets spooled to disk rather than held in memory, a TLS handshake done in the connection's
own thread with a deadline (never in the accept loop).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from agent.config import Config
from agent.dicomfiles import is_complete, read_header
from agent.dicomnode.intake import (
    Intake,
    discard_unacknowledged,
    register_spool,
    unregister_spool,
)
from agent.dicomnode.status import NodeStatus, RefusedCaller, write_snapshot
from agent.dicomnode.tls import server_context
from agent.errors import ConfigError
from agent.ledger import Ledger
from agent.logs import log_failure
from agent.status import AgentEvent
from agent.vocab import EventKind
from agent.watcher import ExpiredCallback, ExportWatcher, ReadyCallback

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 B.2.3): out of resources (the sender retries) and cannot
#: understand (the object is not a whole DICOM instance).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
_REFUSED_KEPT = 20           # distinct refused callers remembered for the status views
_EXTRA_CONNECTIONS = 4       # connections beyond max_associations that may negotiate
_HOUSEKEEPING_SECONDS = 300.0
_ENDINGS = frozenset({EventKind.DELIVERED, EventKind.WITHHELD, EventKind.QUARANTINED})
#: Largest PDU read from a peer. We ask for 64 KiB P-DATA PDUs; an association request
#: proposing 128 contexts of 39 transfer syntaxes stays far below this. A peer announcing
#: more (a malformed or hostile length) is disconnected before anything is buffered.
MAX_PDU_READ = 4 << 20


class _BoundedSocket(AssociationSocket):
    """pynetdicom reads a PDU's announced length in one call, buffering as long as the
    peer sends: refuse lengths no PDU of ours can have (a short read ends the transport)."""

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > MAX_PDU_READ:
            log.warning("DICOM peer announced a %d-byte PDU; connection dropped", nr_bytes)
            self.close()
            return bytearray()
        return super().recv(nr_bytes)


class _BoundedRequests(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.dul.socket.__class__ = _BoundedSocket  # same object, bounded reads
        return assoc


class _GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the address check and the connection bound
    before a thread is spent, and the TLS handshake moved out of the accept loop."""

    node: DicomNode
    #: Connections admitted whose association thread is not running yet: counted with
    #: the active ones, so a burst of connects cannot slip past the bound.
    _starting = 0
    _count_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        sock, address = self.socket.accept()
        if self.ssl_context:
            sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._count_lock:
            admitted = self.node._admit(client_address[0],
                                        len(self.active_associations) + self._starting)
            if admitted:
                self._starting += 1
        return admitted

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(self.node.timeout)
                    request.do_handshake()
                except (OSError, ValueError):
                    self.node._refused("", client_address[0], "TLS handshake failed")
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._starting -= 1

    def shutdown(self) -> None:
        # pynetdicom's shutdown expects to be in the AE's server list; we run our own.
        socketserver.BaseServer.shutdown(self)  # stops serve_forever
        self.server_close()


def _drop_unassociated(assoc: Any) -> None:
    """End a connection that has not associated yet (a silent peer): an A-ABORT is not
    valid before association, and pynetdicom's acceptor would otherwise wait for the
    request until its ACSE timeout. Closing the transport and waking that wait with
    "nothing came" ends both threads now."""
    sock = getattr(assoc.dul, "socket", None)
    if sock is not None:
        sock.close()
    queue = getattr(assoc.dul, "to_user_queue", None)
    if queue is not None:
        queue.put(None)


class DicomNode:
    """The listening node of one agent. :meth:`start` binds and serves; :meth:`stop` stops
    accepting and drops associations in flight (their unacknowledged instances are
    resent by the sender)."""

    def __init__(self, cfg: Config, ledger: Ledger, *, key: bytes,
                 path_hash: Callable[[str], str], series_key: Callable[[str, str], str],
                 on_ready: ReadyCallback, on_expired: ExpiredCallback) -> None:
        from agent.keys import keyed_hash

        self._cfg = cfg
        self._dicom = cfg.dicom
        self._ledger = ledger
        self._path_hash = path_hash
        self._instance_name = lambda study, series, instance: keyed_hash(
            key, "dicom-instance", study, series, instance) + ".dcm"
        self.intake = Intake(cfg.paths.state_dir / "dicom")
        self.snapshot_file = self.intake.root / "status.json"
        self.timeout = float(self._dicom.timeout_seconds)
        self._networks = [ipaddress.ip_network(n, strict=False)
                          for n in self._dicom.allowed_addresses]
        watch = dataclasses.replace(
            cfg.watch, folder=str(self.intake.folder), polling=False,
            stable_seconds=self._dicom.stable_seconds or cfg.watch.stable_seconds,
            delete_after_delivery=False)
        self.watcher = ExportWatcher(watch, series_key=series_key, path_hash=path_hash,
                                     handled=ledger.handled_files(), on_ready=on_ready,
                                     on_expired=on_expired)
        self._ae = self._make_ae()
        self._server: _GuardedServer | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sweep_due = True
        self._dirty = True
        self._port = self._dicom.port
        self._problem = ""
        self._accepted = 0
        self._last: tuple[float, str] | None = None
        self._received = 0
        self._refused_instances = 0
        self._refusals: dict[tuple[str, str, str], RefusedCaller] = {}

    # -- set-up ----------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self._dicom.ae_title)
        syntaxes = [str(ts) for ts in AllTransferSyntaxes]
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification, syntaxes)
        ae.require_calling_aet = list(self._dicom.allowed_callers)
        ae.require_called_aet = True
        ae.maximum_associations = self._dicom.max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = 0x10000  # what we ask peers to send in one PDU (64 KiB)
        # pynetdicom logs values of the objects it moves at INFO and DEBUG: keep it quiet.
        logging.getLogger("pynetdicom").setLevel(logging.ERROR)
        return ae

    def start(self) -> None:
        """Bind the port and serve. Raises ConfigError when the port cannot be had."""
        self.intake.purge_spool()
        register_spool(self._ae, self.intake.spool)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        address = (self._dicom.bind_address, self._dicom.port)
        try:
            server: _GuardedServer = self._ae.make_server(  # type: ignore[assignment]
                address, ssl_context=server_context(self._dicom), evt_handlers=handlers,
                server_class=_GuardedServer, request_handler=_BoundedRequests)
        except OSError as exc:
            unregister_spool(self._ae)
            raise ConfigError(
                f"[dicom.port] the DICOM node cannot listen on port {self._dicom.port} "
                f"({exc.strerror or type(exc).__name__}): another program may use it; "
                "choose another port or stop that program") from None
        server.node = self
        self._server = server
        self._port = int(server.server_address[1])
        self.watcher.start()
        for name, target in (("dicom-node", server.serve_forever),
                             ("dicom-housekeeping", self._housekeeping)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._write_snapshot()
        log.info("DICOM node %s listening on port %d%s", self._dicom.ae_title, self._port,
                 " with TLS" if server.ssl_context else "")

    def stop(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        server, self._server = self._server, None
        if server is not None:
            assocs = list(server.active_associations)
            server.shutdown()
            for assoc in assocs:
                if assoc.is_established:
                    assoc.abort(block=False)
                else:
                    _drop_unassociated(assoc)
            for assoc in assocs:
                assoc.join(max(0.0, deadline - time.monotonic()))
        self.watcher.stop(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        unregister_spool(self._ae)
        self._write_snapshot()

    # -- what the agent and the views read ---------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    def status(self) -> NodeStatus:
        server = self._server
        with self._lock:
            refused = sorted(self._refusals.values(), key=lambda r: r.when, reverse=True)
            return NodeStatus(
                listening=server is not None, ae_title=self._dicom.ae_title, port=self._port,
                address=self._dicom.bind_address,
                tls=bool(server is not None and server.ssl_context),
                active_associations=len(server.active_associations) if server else 0,
                associations=self._accepted,
                last_association=self._last[0] if self._last else None,
                last_caller=self._last[1] if self._last else "",
                instances_received=self._received, instances_refused=self._refused_instances,
                refused_callers=tuple(refused), problem=self._problem,
                pending_series=len(self.watcher.tracker))

    def on_agent_event(self, event: AgentEvent) -> None:
        """Subscribed to the agent: a series ending lets its intake files go."""
        if event.kind in _ENDINGS:
            self._sweep_due = True
            self._wake.set()

    # -- admission -------------------------------------------------------------------------

    def _admit(self, host: str, active: int) -> bool:
        if self._networks:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                ip = None
            if ip is not None and ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip is None or not any(ip in net for net in self._networks):
                self._refused("", host, "address not allowed")
                return False
        if active >= self._dicom.max_associations + _EXTRA_CONNECTIONS:
            self._refused("", host, "too many connections")
            return False
        return True

    def _refused(self, ae_title: str, address: str, reason: str) -> None:
        now = time.time()
        with self._lock:
            k = (ae_title, address, reason)
            old = self._refusals.get(k)
            self._refusals[k] = RefusedCaller(ae_title, address, reason, now,
                                             (old.count + 1) if old else 1)
            if len(self._refusals) > _REFUSED_KEPT:
                oldest = min(self._refusals.values(), key=lambda r: r.when)
                self._refusals.pop((oldest.ae_title, oldest.address, oldest.reason))
            self._dirty = True
            first = old is None
        if first:
            log.warning("DICOM node refused %s from %s: %s", ae_title or "a connection",
                        address, reason)

    # -- association events ----------------------------------------------------------------

    def _on_rejected(self, event: Any) -> None:
        rq = event.assoc.requestor
        calling = str(rq.ae_title or "").strip()
        called = str(getattr(rq.primitive, "called_ae_title", "") or "").strip()
        if self._dicom.allowed_callers and calling not in [
                t.strip() for t in self._dicom.allowed_callers]:
            reason = "calling AE title not allowed"
        elif called and called != self._dicom.ae_title.strip():
            reason = "called AE title is not this node's"
        else:
            reason = "too many associations"
        self._refused(calling, str(rq.address), reason)

    def _on_established(self, event: Any) -> None:
        with self._lock:
            self._accepted += 1
            self._last = (time.time(), str(event.assoc.requestor.ae_title or "").strip())
            self._dirty = True

    def _on_released(self, event: Any) -> None:
        # The sender says it is done: look at the intake now rather than at the next event.
        self.watcher.rescan_now()

    def _on_closed(self, event: Any) -> None:
        removed = discard_unacknowledged(event.assoc)
        if removed:
            log.info("DICOM association ended mid-instance: %d unacknowledged "
                     "instance(s) dropped (the sender resends them)", removed)

    # -- C-STORE ---------------------------------------------------------------------------

    def _on_store(self, event: Any) -> int:
        try:
            received = Path(event.dataset_path)
        except AttributeError:  # pragma: no cover - chunked receiving is always on here
            return STATUS_OUT_OF_RESOURCES
        try:
            header = read_header(received)
            whole = header is not None and is_complete(received)
        except OSError:
            header, whole = None, False
        if header is None or not whole:
            with self._lock:
                self._refused_instances += 1
                self._dirty = True
            return STATUS_CANNOT_UNDERSTAND
        try:
            self.intake.accept(received, self._instance_name(
                header.study_uid, header.series_uid, header.instance_uid))
        except OSError as exc:
            log_failure(log, "a received instance could not be written to the intake; the "
                        "sender was told to retry", exc)
            with self._lock:
                self._refused_instances += 1
                self._dirty = True
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self._received += 1
            self._dirty = True
        return STATUS_SUCCESS

    # -- housekeeping ----------------------------------------------------------------------

    def _housekeeping(self) -> None:
        next_sweep = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(2.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._dirty:
                self._write_snapshot()
            if self._sweep_due or time.monotonic() >= next_sweep:
                self._sweep_due = False
                next_sweep = time.monotonic() + _HOUSEKEEPING_SECONDS
                self.sweep()

    def sweep(self) -> int:
        """Remove intake files whose series ended; returns how many."""
        try:
            return self.intake.remove_ended(self._ledger, self._path_hash,
                                            self._cfg.paths.quarantine)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the node
            log_failure(log, "cleaning the DICOM intake failed; it is retried later", exc)
            return 0

    def _write_snapshot(self) -> None:
        self._dirty = False
        try:
            write_snapshot(self.status(), self.snapshot_file)
        except OSError as exc:
            log_failure(log, "the DICOM node status could not be written", exc)

