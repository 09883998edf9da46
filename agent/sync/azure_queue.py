"""Optional Azure Storage Queue notification: one message per delivered manifest.

``[target] queue_name`` turns it on (``pip install 'clinic2cloud[queue]'``). After a
series' manifest is in place the agent sends a base64-encoded JSON message (the encoding
Azure Functions' queue trigger expects by default)::

    {"event": "clinic2cloud.manifest", "container": "...", "blob": "<location>/manifest.json",
     "location": "<location>", "content_sha256": "..."}

Delivery is at least once: the message is sent after the manifest is committed and recorded
as sent in the progress store; a crash in between sends it again on the next attempt, so a
consumer must tolerate duplicates (as with Event Grid). Names are pseudonyms: no PHI.

A container SAS grants nothing on queues, so the notification needs a connection string
(account key, or an account SAS with queue add permission and a ``QueueEndpoint``) or
Entra ID (role *Storage Queue Data Message Sender*).
"""

from __future__ import annotations

import json
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from agent.errors import ConfigError
from agent.sync.azure_auth import BudgetRetry, Connection
from agent.sync.azure_errors import code_of, convert


class QueueNotFound(ConfigError):
    """The configured queue does not exist: create it or correct ``queue_name``."""


class ManifestNotifier:
    """Sends the manifest messages to one queue."""

    def __init__(self, conn: Connection, queue_name: str, *, retry_budget: float) -> None:
        try:
            from azure.storage.queue import QueueClient, TextBase64EncodePolicy
        except ImportError:
            raise ConfigError(
                "[target.queue_name] needs azure-storage-queue: "
                "pip install 'clinic2cloud[queue]'"
            ) from None
        kwargs: dict[str, Any] = {
            "retry_policy": BudgetRetry(retry_budget),
            "message_encode_policy": TextBase64EncodePolicy(),
            "connection_timeout": 10,
            "read_timeout": 30,
        }
        self.container = conn.container
        if conn.auth == "connection-string" and conn.secret is not None:
            try:
                self._client = QueueClient.from_connection_string(
                    conn.secret.value, queue_name, **kwargs
                )
            except ValueError:
                raise ConfigError(
                    "[target.queue_name] is set but the connection string names no queue "
                    "endpoint (add QueueEndpoint=...)"
                ) from None
            self.where = f"queue {queue_name}"
        elif conn.auth == "entra-id":
            from azure.identity import DefaultAzureCredential

            url = conn.account_url.replace(".blob.", ".queue.", 1)
            self._client = QueueClient(url, queue_name, credential=DefaultAzureCredential(),
                                       **kwargs)
            self.where = f"queue {queue_name} at {url}"
        else:
            raise ConfigError(
                "[target.queue_name] needs a connection string or Entra ID credentials: a "
                "container SAS grants no access to queues (or leave queue_name empty and use "
                "Event Grid, see docs/azure.md)"
            )

    def _convert(self, exc: BaseException, action: str) -> Exception:
        if isinstance(exc, ResourceNotFoundError) and code_of(exc) == "QueueNotFound":
            return QueueNotFound(
                f"the {self.where} does not exist (HTTP 404 QueueNotFound): create it, or "
                "correct [target] queue_name"
            )
        return convert(exc, action=action, where=self.where)

    def notify(self, location: str, manifest_blob: str, content_sha256: str, *,
               reprocess: bool = False) -> None:
        """``reprocess``: a person asked the cloud to process the delivery again."""
        doc: dict[str, Any] = {
            "event": "clinic2cloud.manifest",
            "container": self.container,
            "blob": manifest_blob,
            "location": location,
            "content_sha256": content_sha256,
        }
        if reprocess:
            doc["reprocess"] = True
        message = json.dumps(doc)
        try:
            self._client.send_message(message)
        except AzureError as exc:
            raise self._convert(exc, "sending the manifest notification") from None

    def check(self) -> list[str]:
        try:
            self._client.get_queue_properties()
        except AzureError as exc:
            return [str(self._convert(exc, "checking the notification queue"))]
        return []

    def close(self) -> None:
        self._client.close()
