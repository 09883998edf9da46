"""The worker's tests use the cloud loop's storage fixtures (Azurite blob + queue)."""

from tests.results.conftest import Storage as Storage
from tests.results.conftest import azurite as azurite
from tests.results.conftest import azurite_queue as azurite_queue
from tests.results.conftest import storage as storage
