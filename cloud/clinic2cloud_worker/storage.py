"""Storage clients from ``[target]``: the delivery and results containers and the queue.

Credentials, as the agent reads them (docs/azure.md): a ``connection_string``; an
``account_url`` with a ``sas_token`` (an account SAS: the worker reads, lists, writes and
uses the queue); ``secret_env`` / ``secret_file`` holding either; or
``use_default_credential`` - Entra ID, the managed identity of the Container Apps job in
production (``pip install 'clinic2cloud-worker[identity]'``).

SDK errors become :class:`StorageUnavailable` (retry) or :class:`StorageDenied` (stop)
without the SDK's text, which can quote a SAS signature.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from clinic2cloud_worker.config import StorageConfig
from clinic2cloud_worker.errors import StorageDenied, StorageUnavailable, WorkerConfigError

for _name in ("azure.core.pipeline.policies.http_logging_policy", "azure.storage",
              "urllib3.connectionpool"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def _secret(s: StorageConfig) -> str:
    given = [k for k in ("connection_string", "sas_token", "secret_env", "secret_file")
             if getattr(s, k)]
    if len(given) > 1:
        raise WorkerConfigError(f"[target] sets {' and '.join(given)}: configure exactly one "
                                "source of the storage secret")
    if s.secret_env:
        value = os.environ.get(s.secret_env, "").strip()
        if not value:
            raise WorkerConfigError(f"[target.secret_env] {s.secret_env} is not set or empty")
        return value
    if s.secret_file:
        try:
            return Path(s.secret_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise WorkerConfigError(
                f"[target.secret_file] {s.secret_file} cannot be read ({exc.strerror})"
            ) from None
    return (s.connection_string or s.sas_token).strip()


@dataclass(frozen=True)
class Storage:
    """The service clients of one storage account."""

    blobs: BlobServiceClient
    queue_factory: Any  # (queue name) -> QueueClient
    where: str

    def container(self, name: str) -> ContainerClient:
        return self.blobs.get_container_client(name)

    def queue(self, name: str) -> QueueClient:
        client: QueueClient = self.queue_factory(name)
        return client


#: Messages are read as they are stored: the agent base64-encodes its JSON (what Azure
#: Functions expects), Event Grid's encoding is its own; messages.parse takes both.
_QUEUE_KW: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy()}


def open_storage(s: StorageConfig) -> Storage:
    """Clients for the account ``[target]`` names (see the module docstring)."""
    secret = _secret(s)
    if secret and ("AccountName=" in secret or "BlobEndpoint=" in secret):
        blobs = BlobServiceClient.from_connection_string(secret, connection_timeout=10,
                                                         read_timeout=60)
        where = blobs.url.split("?")[0].rstrip("/")

        def from_cs(name: str) -> QueueClient:
            try:
                return QueueClient.from_connection_string(secret, name, **_QUEUE_KW)
            except ValueError:
                raise WorkerConfigError("the connection string names no queue endpoint "
                                        "(add QueueEndpoint=...)") from None
        return Storage(blobs, from_cs, where)
    url = s.account_url.strip().split("?")[0].rstrip("/")
    if not url:
        raise WorkerConfigError("[target.account_url] is empty: set it, or a connection "
                                "string")
    credential: Any
    if secret:
        credential = secret.lstrip("?")
    elif s.use_default_credential:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise WorkerConfigError("[target.use_default_credential] needs azure-identity: "
                                    "pip install 'clinic2cloud-worker[identity]'") from None
        credential = DefaultAzureCredential()
    else:
        raise WorkerConfigError("no storage credentials in [target]")
    queue_url = url.replace(".blob.", ".queue.", 1)

    def from_url(name: str) -> QueueClient:
        return QueueClient(queue_url, name, credential=credential, **_QUEUE_KW)
    return Storage(BlobServiceClient(url, credential=credential, connection_timeout=10,
                                     read_timeout=60), from_url, url)


def status_of(exc: BaseException) -> int:
    return int(getattr(exc, "status_code", None) or 0)


def code_of(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return "" if code is None else str(getattr(code, "value", code))


def convert(exc: BaseException, action: str, where: str) -> Exception:
    """The worker error for an SDK exception raised while ``action``."""
    status, code = status_of(exc), code_of(exc)
    detail = f"HTTP {status} {code}".strip() if status else type(exc).__name__
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return StorageDenied(f"storage refused the credentials while {action} ({detail}) on "
                             f"{where}: check the key, SAS or the identity's roles")
    if isinstance(exc, HttpResponseError) and code in ("ContainerNotFound", "QueueNotFound"):
        return WorkerConfigError(f"{code} while {action} on {where}: create it or correct "
                                 "the configuration")
    if isinstance(exc, AzureError):
        return StorageUnavailable(f"storage unavailable while {action} on {where} ({detail})")
    return StorageUnavailable(f"unexpected failure while {action} ({type(exc).__name__})")
