"""The worker's tests use the cloud loop's storage fixtures (Azurite blob + queue)."""

from tests.results.conftest import Storage, azurite, azurite_queue, storage  # noqa: F401
