"""``clinic2cloud doctor`` for the DICOM node: is it listening (it answers our own C-ECHO,
or its port is free for the next start), are its TLS files usable, does the PACS that
results go to answer a C-ECHO."""

from __future__ import annotations

import socket
import ssl

from agent.config import Config
from agent.dicomnode.remote import RemoteNode
from agent.dicomnode.status import read_snapshot
from agent.dicomnode.tls import client_context, server_context
from agent.errors import Clinic2CloudError, TargetUnavailable


def dicom_checks(cfg: Config) -> tuple[list[str], list[str]]:
    """(lines to show, problems found)."""
    lines: list[str] = []
    problems: list[str] = []
    if cfg.dicom.listen:
        _check_node(cfg, lines, problems)
    pacs = cfg.results.pacs
    if pacs:
        try:
            node = RemoteNode.configured(pacs, cfg.dicom)
            seconds = echo_node(node)
            lines.append(f"PACS {node}: answers C-ECHO ({seconds * 1000:.0f} ms)")
        except Clinic2CloudError as exc:
            problems.append(str(exc))
    return lines, problems


def echo_node(node: RemoteNode, timeout: float = 10.0) -> float:
    from agent.dicomnode.scu import echo

    return echo(node, timeout=timeout)


def _check_node(cfg: Config, lines: list[str], problems: list[str]) -> None:
    dicom = cfg.dicom
    try:
        tls = server_context(dicom) is not None
    except Clinic2CloudError as exc:
        problems.append(str(exc))
        return
    snapshot = read_snapshot(cfg.paths.state_dir / "dicom" / "status.json")
    port = dicom.port or (snapshot.port if snapshot else 0)
    if not port:
        lines.append("DICOM node: port 0 (any free port) and the agent is not running")
        return
    host = dicom.bind_address or "127.0.0.1"
    calling = dicom.allowed_callers[0] if dicom.allowed_callers else "C2C-DOCTOR"
    me = RemoteNode(dicom.ae_title, host, port, calling_ae_title=calling,
                    tls=_self_check_context(cfg) if tls else None)
    try:
        echo_node(me, timeout=3.0)  # ourselves, on this computer: no reason to be slow
    except TargetUnavailable:
        if _port_free(host, port):
            lines.append(f"DICOM node: not running now; port {port} is free for it")
        else:
            problems.append(
                f"[dicom.port] port {port} is taken but no DICOM node of this agent answers "
                "there: another program uses it, or the node refuses this computer "
                "([dicom] allowed_addresses / allowed_callers); choose another port or "
                "allow 127.0.0.1")
        return
    summary = snapshot.summary() if snapshot and snapshot.listening else ""
    lines.append(summary or f"DICOM node {dicom.ae_title} answers C-ECHO on port {port}")


def _self_check_context(cfg: Config) -> ssl.SSLContext | None:
    """Talking to ourselves: present our certificate when callers need one; our own
    certificate need not chain to anything this computer trusts."""
    ctx = client_context(cfg.dicom, check_hostname=False, require=True)
    if ctx is not None and not cfg.dicom.tls_ca:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
