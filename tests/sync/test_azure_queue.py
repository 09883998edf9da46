"""The optional Storage Queue notification, against a real azurite-queue."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from agent.errors import ConfigError, TargetUnavailable
from agent.sync.azure import AzureTarget
from agent.sync.azure_queue import QueueNotFound

from .azurite import ACCOUNT, Azurite, azure_config, free_port, make_delivery

queue_sdk = pytest.importorskip("azure.storage.queue")


def both(blob: Azurite, queue_port: int) -> str:
    return (f"{blob.connection_string}"
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/{ACCOUNT};")


def new_queue(cs: str) -> str:
    name = f"q{uuid.uuid4().hex[:16]}"
    queue_sdk.QueueServiceClient.from_connection_string(cs).create_queue(name)
    return name


def messages(cs: str, name: str) -> list[dict[str, str]]:
    client = queue_sdk.QueueClient.from_connection_string(cs, name)
    return [json.loads(base64.b64decode(m.content))
            for m in client.receive_messages(messages_per_page=32, visibility_timeout=60)]


def test_one_message_per_delivered_manifest(
    tmp_path: Path, azurite: Azurite, azurite_queue: Azurite, container: str
) -> None:
    cs = both(azurite, azurite_queue.port)
    queue = new_queue(cs)
    cfg = azure_config(tmp_path, azurite, container, connection_string=cs, queue_name=queue)
    delivery = make_delivery(tmp_path, [1000, 2000])
    target = AzureTarget(cfg)
    try:
        assert target.check() == []
        target.deliver(delivery)
        assert target.deliver(delivery).already_present  # no second message
    finally:
        target.close()
    got = messages(cs, queue)
    assert got == [{
        "event": "clinic2cloud.manifest", "container": container,
        "blob": f"{delivery.location}/manifest.json", "location": delivery.location,
        "content_sha256": delivery.manifest["content_sha256"],
    }]


def test_message_sent_later_when_queue_was_unreachable(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    port = free_port()
    cs = both(azurite, port)
    cfg = azure_config(tmp_path, azurite, container, connection_string=cs, queue_name="later")
    delivery = make_delivery(tmp_path, [500])
    target = AzureTarget(cfg, retry_budget=0.5)
    try:
        with pytest.raises(TargetUnavailable):
            target.deliver(delivery)  # the manifest is in place, the message is not sent
        queue_server = Azurite(tmp_path / "queue", port=port, service="queue")
        queue_server.start()
        try:
            queue_sdk.QueueServiceClient.from_connection_string(cs).create_queue("later")
            receipt = target.deliver(delivery)
            assert receipt.already_present and receipt.bytes_sent == 0
            assert len(messages(cs, "later")) == 1
        finally:
            queue_server.stop()
    finally:
        target.close()


def test_missing_queue_and_sas_only_are_config_errors(
    tmp_path: Path, azurite: Azurite, azurite_queue: Azurite, container: str
) -> None:
    cs = both(azurite, azurite_queue.port)
    cfg = azure_config(tmp_path, azurite, container, connection_string=cs, queue_name="nope")
    target = AzureTarget(cfg)
    try:
        assert any("does not exist" in p for p in target.check())
        with pytest.raises(QueueNotFound):
            target.deliver(make_delivery(tmp_path, [10]))
    finally:
        target.close()
    with pytest.raises(ConfigError, match="container SAS grants no access"):
        AzureTarget(azure_config(tmp_path, azurite, container, connection_string="",
                                 account_url=azurite.url, sas_token="sv=1&sig=x",
                                 queue_name="q"))
