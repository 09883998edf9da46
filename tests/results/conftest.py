"""Fixtures for the cloud loop: Azurite blob + queue (shared with tests/sync), containers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from azure.storage.queue import QueueServiceClient

from tests.sync.azurite import Azurite
from tests.sync.conftest import azurite as azurite
from tests.sync.conftest import azurite_queue as azurite_queue

from .roundtrip import connection_string


@dataclass
class Storage:
    blob: Azurite
    queue: Azurite
    deliveries: str
    results: str
    queue_name: str

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob, self.queue)


@pytest.fixture
def storage(azurite: Azurite, azurite_queue: Azurite) -> Iterator[Storage]:
    deliveries, results = azurite.new_container(), azurite.new_container()
    name = f"q{uuid.uuid4().hex[:12]}"
    s = Storage(azurite, azurite_queue, deliveries, results, name)
    qs = QueueServiceClient.from_connection_string(s.connection_string)
    qs.create_queue(name)
    yield s
    qs.delete_queue(name)
