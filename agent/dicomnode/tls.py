"""DICOM TLS (PS3.15 Annex B, the BCP 195 profiles): TLS 1.2 or later, certificates from
the configuration. The node's certificate and key identify it to callers; a CA bundle,
when given, is what callers' certificates must chain to (mutual authentication), and what
a PACS's certificate must chain to when the agent sends."""

from __future__ import annotations

import ssl
from pathlib import Path

from agent.config import DicomConfig
from agent.errors import ConfigError


def _existing(value: str, name: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"[dicom.{name}] {path} does not exist or is not a file")
    return path


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def _unusable(exc: Exception) -> ConfigError:
    return ConfigError(f"[dicom.tls_certificate] the TLS certificate, key or CA file cannot be "
                       f"used ({type(exc).__name__}); check they are PEM files and that the "
                       "key matches the certificate")


def server_context(dicom: DicomConfig) -> ssl.SSLContext | None:
    """The listening side's context, or None when TLS is not configured."""
    if not dicom.tls_certificate:
        return None
    cert = _existing(dicom.tls_certificate, "tls_certificate")
    key = _existing(dicom.tls_key, "tls_key")
    ca = _existing(dicom.tls_ca, "tls_ca") if dicom.tls_ca else None
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if ca is not None:
            ctx.load_verify_locations(str(ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        raise _unusable(exc) from None
    return ctx


def client_context(dicom: DicomConfig, *, check_hostname: bool = True,
                   require: bool = False) -> ssl.SSLContext | None:
    """The sending side's context. It verifies the peer against ``tls_ca`` (else the
    system's roots) and presents this node's certificate when one is configured. Without
    any TLS file: None, or (``require``) a context that verifies against the system's roots."""
    if not dicom.tls_certificate and not dicom.tls_ca and not require:
        return None
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = check_hostname
    try:
        if dicom.tls_ca:
            ctx.load_verify_locations(str(_existing(dicom.tls_ca, "tls_ca")))
        else:
            ctx.load_default_certs()
        if dicom.tls_certificate:
            ctx.load_cert_chain(str(_existing(dicom.tls_certificate, "tls_certificate")),
                                str(_existing(dicom.tls_key, "tls_key")))
    except (ssl.SSLError, OSError) as exc:
        raise _unusable(exc) from None
    return ctx
