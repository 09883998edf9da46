"""A remote DICOM node (a PACS) named as ``AE@host:port``, the way sites write it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import DicomConfig

#: The calling AE title the agent uses when it associates, unless the config says otherwise.
DEFAULT_CALLING_AE = "CLINIC2CLOUD"


def valid_ae_title(title: str) -> bool:
    """1-16 printable ASCII characters, not only spaces, no backslash (PS3.5 AE VR)."""
    return 0 < len(title.strip()) <= 16 and all(32 <= ord(c) < 127 and c != "\\" for c in title)


@dataclass(frozen=True)
class RemoteNode:
    """Where to send: the called AE title, host and port; who we say we are; TLS or not."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = DEFAULT_CALLING_AE
    #: A client TLS context (see :func:`agent.dicomnode.tls.client_context`); None: plain TCP.
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, *, key: str = "results.pacs",
              calling_ae_title: str = DEFAULT_CALLING_AE,
              tls: ssl.SSLContext | None = None) -> RemoteNode:
        """``"PACS@pacs.example.org:104"`` (IPv6: ``"PACS@[fd00::5]:104"``).

        Raises :class:`~agent.errors.ConfigError` naming ``key`` when the text is not that.
        """
        def wrong(why: str) -> ConfigError:
            return ConfigError(f"[{key}] {why}: write it as AE@host:port, e.g. "
                               f"PACS@pacs.example.org:104, not {text!r}")

        ae, at, rest = text.strip().rpartition("@")
        if not at or not ae:
            raise wrong("names no AE title")
        if not valid_ae_title(ae):
            raise wrong("the AE title must be 1-16 ASCII characters without backslash")
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise wrong("names no host and port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise wrong("the port must be a number between 1 and 65535")
        return cls(ae_title=ae, host=host, port=int(port_text),
                   calling_ae_title=calling_ae_title, tls=tls)

    @classmethod
    def configured(cls, text: str, dicom: DicomConfig, *, key: str = "results.pacs"
                   ) -> RemoteNode:
        """The node ``text`` names, called with this node's AE title and, when
        ``[dicom] send_tls`` is on, over TLS with the ``[dicom]`` certificate files."""
        from agent.dicomnode.tls import client_context

        tls = client_context(dicom, require=True) if dicom.send_tls else None
        return cls.parse(text, key=key, calling_ae_title=dicom.ae_title, tls=tls)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"
