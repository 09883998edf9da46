"""The running agent's control endpoint, and the client the command line talks to it with.

``clinic2cloud status|pause|resume|retry|quit`` reach the agent running for this user -
headless or with its tray - through a local endpoint (Maestral's model):

* **Linux, macOS**: a Unix domain socket ``control.sock`` in the state folder, mode 0600.
  A state folder too deep for a socket address (about 100 bytes) gets the socket in a
  private 0700 folder under ``$XDG_RUNTIME_DIR`` (else the temporary folder) instead.
* **Windows**: a named pipe ``\\\\.\\pipe\\clinic2cloud-<hash of the state folder>``.
  Pipes made by Python's :mod:`multiprocessing.connection` get the default security
  descriptor: full control for the creating user, SYSTEM and Administrators, read-only
  for others - who can therefore not send a request (and would still lack the token).
  Not exercised by the test suite, which runs on Linux.

On top of the operating system's access control every request carries a token that the
agent writes, with the address, into ``control.json`` (0600) in the state folder: only
someone who can read this user's state can talk to the agent. Messages are JSON (never
pickle), one request and one answer per connection, bounded in size and time, so a
stalled or hostile client cannot hold the endpoint.

:class:`ControlServer` runs inside the agent (one thread, ``control-endpoint``);
:class:`RemoteAgent` is the client and implements :class:`~agent.main.AgentFacade`, so
the CLI and a tray could drive a running agent exactly as they drive one in-process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import Config
from agent.errors import Clinic2CloudError
from agent.paths import AgentPaths
from agent.status import (
    AgentEvent,
    AgentStatus,
    LocalIdentity,
    SeriesSummary,
    status_from_dict,
    status_to_dict,
    summary_from_dict,
)

if TYPE_CHECKING:
    from agent.main import AgentFacade

log = logging.getLogger(__name__)

ENDPOINT_FILE = "control.json"
#: Longest socket path that fits ``sockaddr_un`` on every Unix (Linux 108, macOS 104).
_MAX_SOCKET_PATH = 100
#: Largest request the agent reads, and how long it waits for one after a connection.
_MAX_REQUEST = 64 * 1024
_REQUEST_TIMEOUT = 2.0
#: Largest answer and how long a client waits for it (status reads local headers).
_MAX_ANSWER = 16 * 1024 * 1024
ANSWER_TIMEOUT = 15.0


class NotRunning(Clinic2CloudError):
    """No agent runs for this user (or it does not answer)."""

    title = "Clinic2Cloud is not running"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "no Clinic2Cloud agent is running for this user; start it "
                                    "with `clinic2cloud run` (or from the start menu)")


class ControlError(Clinic2CloudError):
    """The agent answered that it could not do what was asked (the message says why)."""


def endpoint_file(paths: AgentPaths) -> Path:
    return paths.state_dir / ENDPOINT_FILE


def endpoint_address(paths: AgentPaths) -> tuple[str, str]:
    """(family, address) of this user's endpoint: ``AF_PIPE`` on Windows, else ``AF_UNIX``."""
    tag = hashlib.sha256(str(paths.state_dir.resolve()).encode()).hexdigest()[:16]
    if sys.platform == "win32":
        return "AF_PIPE", rf"\\.\pipe\clinic2cloud-{tag}"
    sock = paths.state_dir / "control.sock"
    if len(os.fsencode(str(sock))) <= _MAX_SOCKET_PATH:
        return "AF_UNIX", str(sock)
    bases = [os.environ.get("XDG_RUNTIME_DIR", ""), tempfile.gettempdir(), "/tmp"]
    for base in [b for b in bases if b]:
        private = Path(base) / f"clinic2cloud-{os.getuid()}"
        sock = private / f"{tag}.sock"
        if len(os.fsencode(str(sock))) > _MAX_SOCKET_PATH:
            continue
        private.mkdir(mode=0o700, exist_ok=True)
        st = private.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise Clinic2CloudError(
                f"{private} belongs to someone else or is open to others; remove it so "
                "that Clinic2Cloud can create its private control folder")
        return "AF_UNIX", str(sock)
    raise Clinic2CloudError("no folder short enough for the control socket was found")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class ControlServer:
    """Answers the command line on behalf of a running agent, on a thread of its own.

    ``on_quit`` is what ``clinic2cloud quit`` does (the tray ends its loop; headless, the
    agent stops); it runs on a thread of its own, after the answer was sent.
    """

    def __init__(self, agent: AgentFacade, paths: AgentPaths,
                 on_quit: Callable[[], None]) -> None:
        self._agent = agent
        self._paths = paths
        self._on_quit = on_quit
        self._token = secrets.token_hex(32)
        self._family, self._address = endpoint_address(paths)
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Listen; the caller holds the single-instance lock, so any old socket is stale."""
        if self._family == "AF_UNIX":
            Path(self._address).unlink(missing_ok=True)
        self._listener = Listener(self._address, self._family, backlog=16)
        if self._family == "AF_UNIX":
            os.chmod(self._address, 0o600)
        doc = {"family": self._family, "address": self._address, "pid": os.getpid(),
               "token": self._token}
        _write_private(endpoint_file(self._paths), json.dumps(doc).encode())
        self._thread = threading.Thread(target=self._serve, name="control-endpoint",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._listener is None or self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):  # wake accept() up
            Client(self._address, self._family).close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._listener.close()  # also removes the socket file
        with contextlib.suppress(OSError):
            doc = json.loads(endpoint_file(self._paths).read_text(encoding="utf-8"))
            if doc.get("token") == self._token:  # not a newer agent's
                endpoint_file(self._paths).unlink()

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            with conn:
                if self._stopping.is_set():
                    return
                try:
                    self._one(conn)
                except (OSError, EOFError, ValueError):
                    continue  # the client went away or sent garbage: its problem
                except Exception as exc:  # noqa: BLE001 - the endpoint must outlive a bug
                    from agent.logs import log_failure

                    log_failure(log, "control request failed", exc)

    def _one(self, conn: Connection) -> None:
        if not conn.poll(_REQUEST_TIMEOUT):
            return
        request = json.loads(conn.recv_bytes(_MAX_REQUEST))
        if not isinstance(request, dict) or not hmac.compare_digest(
                str(request.get("token", "")), self._token):
            conn.send_bytes(_answer(False, "not allowed: wrong or missing token"))
            return
        op, args = str(request.get("op", "")), request.get("args") or {}
        try:
            result = self._dispatch(op, args if isinstance(args, dict) else {})
        except Clinic2CloudError as exc:
            conn.send_bytes(_answer(False, str(exc)))
            return
        conn.send_bytes(_answer(True, result))
        if op == "quit":
            threading.Thread(target=self._on_quit, name="control-quit", daemon=True).start()

    def _dispatch(self, op: str, args: dict[str, Any]) -> Any:
        agent = self._agent
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "status":
            return status_to_dict(agent.status())
        if op == "recent":
            limit = int(args.get("limit", 50))
            return [dataclasses.asdict(s) for s in agent.recent(max(1, min(limit, 1000)))]
        if op == "identity":
            found = agent.identity(int(args["series"]))
            return dataclasses.asdict(found) if found is not None else None
        if op == "pause":
            hours = args.get("seconds")
            agent.pause(None if hours is None else float(hours))
            return {"paused_until": agent.status().paused_until}
        if op == "resume":
            agent.resume()
            return {}
        if op == "retry":
            series = args.get("series")
            ids = ([int(series)] if series is not None else
                   [s.id for s in agent.recent(1000) if s.state == "quarantined"])
            return [{"series": i, "message": agent.retry(i)} for i in ids]
        if op == "retry-results":
            return {"message": agent.retry_results(int(args["series"]))}
        if op == "quit":
            return {}
        raise ControlError(f"unknown request {op!r}; is the agent older than this command?")


def _answer(ok: bool, payload: Any) -> bytes:
    body = {"ok": True, "result": payload} if ok else {"ok": False, "error": str(payload)}
    return json.dumps(body).encode("utf-8")


class RemoteAgent:
    """The running agent, seen from another process: the :class:`AgentFacade` over the
    control endpoint. :meth:`connect` returns None when no agent runs for this user."""

    def __init__(self, cfg: Config, family: str, address: str, token: str, pid: int) -> None:
        self._cfg = cfg
        self._family, self._address, self._token = family, address, token
        self.pid = pid

    @classmethod
    def connect(cls, cfg: Config) -> RemoteAgent | None:
        try:
            doc = json.loads(endpoint_file(cfg.paths).read_text(encoding="utf-8"))
            agent = cls(cfg, str(doc["family"]), str(doc["address"]), str(doc["token"]),
                        int(doc.get("pid", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            agent.call("ping", timeout=5.0)
        except NotRunning:
            return None  # a file left by an agent killed with -9
        return agent

    def call(self, op: str, timeout: float = ANSWER_TIMEOUT, **args: Any) -> Any:
        """Send one request; its result. Raises NotRunning or ControlError."""
        try:
            conn = Client(self._address, self._family)
        except (OSError, ValueError):
            raise NotRunning() from None
        try:
            with conn:
                conn.send_bytes(json.dumps({"token": self._token, "op": op,
                                            "args": args}).encode("utf-8"))
                if not conn.poll(timeout):
                    raise NotRunning(f"the running agent did not answer within {timeout:.0f} s")
                answer = json.loads(conn.recv_bytes(_MAX_ANSWER))
        except (OSError, EOFError, ValueError):
            raise NotRunning("the running agent closed the connection") from None
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error", "the agent refused the request")))
        return answer.get("result")

    # -- AgentFacade -----------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._cfg

    def start(self) -> None:
        """Nothing to do: it runs already."""

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the agent to quit and wait (up to ``timeout``) until it has."""
        with contextlib.suppress(NotRunning):
            self.call("quit")
        self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self.call("ping", timeout=2.0)
            except NotRunning:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.1)  # nothing signals another process's exit to us: poll briefly

    def status(self) -> AgentStatus:
        return status_from_dict(self.call("status"))

    def subscribe(self, callback: Callable[[AgentEvent], None]) -> None:
        """Events do not cross the endpoint; a remote front end polls :meth:`status`."""

    def pause(self, seconds: float | None) -> None:
        self.call("pause", seconds=seconds)

    def resume(self) -> None:
        self.call("resume")

    def retry(self, series_id: int) -> str:
        [answer] = self.call("retry", series=series_id)
        return str(answer["message"])

    def retry_results(self, series_id: int) -> str:
        return str(self.call("retry-results", series=series_id)["message"])

    def retry_all(self) -> list[tuple[int, str]]:
        return [(int(a["series"]), str(a["message"])) for a in self.call("retry")]

    def recent(self, limit: int = 50) -> list[SeriesSummary]:
        return [summary_from_dict(r) for r in self.call("recent", limit=limit)]

    def identity(self, series_id: int) -> LocalIdentity | None:
        raw = self.call("identity", series=series_id)
        return LocalIdentity(**raw) if isinstance(raw, dict) else None

    @property
    def busy(self) -> bool:
        status = self.status()
        return bool(status.working or status.queued)


def ledger_status(cfg: Config, limit: int = 20) -> tuple[AgentStatus, list[SeriesSummary]]:
    """What the ledger says when no agent runs: counts, pause, recent series (with their
    local identity, the export folder found by a scan of the watched folder)."""
    from agent.keys import installation_secret
    from agent.ledger import Ledger
    from agent.localview import LocalView, recent_summaries
    from agent.main import read_pause
    from agent.pipeline import export_path_hash
    from agent.status import AgentState, start_of_today
    from agent.vocab import SeriesState
    from agent.watcher import scan_folder

    key = installation_secret(cfg.paths.installation_secret)
    root = Path(cfg.watch.folder).expanduser() if cfg.watch.folder else None
    ledger = Ledger(cfg.paths.ledger, key)
    try:
        view = LocalView(cfg, ledger, lambda p: export_path_hash(key, p),
                         lambda: list(scan_folder(root)) if root and root.is_dir() else [])
        today = start_of_today()
        counts = ledger.counts(since=today)
        recent = recent_summaries(ledger, view, limit)
        quarantined = len(ledger.open_quarantine())
        status = AgentStatus(
            state=AgentState.STOPPED,
            queued=sum(counts.get(s, 0) for s in (SeriesState.STABLE, SeriesState.STAGED,
                                                   SeriesState.PROCESSED,
                                                   SeriesState.VERIFIED)),
            delivered_today=counts.get(SeriesState.DELIVERED, 0),
            withheld_today=counts.get(SeriesState.WITHHELD, 0), quarantined=quarantined,
            paused_until=read_pause(ledger),
            message="not running: exports are picked up when it starts again",
            recent=tuple(recent[:10]),
            already_delivered_today=ledger.reexport_count(today))
    finally:
        ledger.close()
    return status, recent
