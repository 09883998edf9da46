"""Fixtures for the sync tests against a real Azurite.

``azurite`` is one session-wide blob service; ``azurite_factory`` starts private ones for
tests that kill and restart the storage. Every process started here is stopped at teardown.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import Config

from .azurite import Azurite, azure_config


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A queue service beside the blob one (for the optional manifest notification)."""
    server = Azurite(tmp_path_factory.mktemp("azurite-queue"), service="queue")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azurite_factory(tmp_path: Path) -> Iterator[Callable[..., Azurite]]:
    started: list[Azurite] = []

    def make(location: Path | None = None) -> Azurite:
        server = Azurite(location or tmp_path / f"azurite-{len(started)}")
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.fixture
def container(azurite: Azurite) -> str:
    return azurite.new_container()


@pytest.fixture
def make_azure_config(tmp_path: Path, azurite: Azurite, container: str) -> Callable[..., Config]:
    def make(**target: object) -> Config:
        return azure_config(tmp_path, azurite, container, **target)

    return make


