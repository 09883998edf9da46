"""How the Azure target authenticates, and the SDK client it builds from the config.

Credentials, in the order they are looked for (exactly one source may be configured):

* ``connection_string`` - an account connection string (account key or SAS inside);
* ``sas_token`` with ``account_url`` - a container SAS (create + write is enough);
* ``account_url`` that is itself a container SAS URL (``https://acct.blob.core.windows.net/
  container?sv=...``) - the container is taken from the URL;
* ``secret_env`` / ``secret_file`` - the same secret kept out of the config file. Its value
  is read as a **connection string** if it contains ``AccountName=`` or ``BlobEndpoint=``,
  as a **container SAS URL** if it starts with ``https://`` or ``http://``, and as a
  **SAS token** (leading ``?`` optional) otherwise. On POSIX a secret file readable by group
  or others is refused;
* ``use_default_credential`` with ``account_url`` - Microsoft Entra ID through
  ``DefaultAzureCredential`` (``pip install clinic2cloud[identity]``).

Secrets never appear in :attr:`Connection.description`, logs or error messages.
"""

from __future__ import annotations

import os
import random
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from azure.storage.blob import ContainerClient, ExponentialRetry
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from agent.config import TargetConfig
from agent.errors import ConfigError

_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Secret:
    """A credential and what kind it is. ``repr`` never shows the value."""

    kind: str  # "connection-string", "sas-url", "sas-token"
    value: str

    def __repr__(self) -> str:
        return f"Secret(kind={self.kind!r}, value=<hidden>)"


@dataclass(frozen=True)
class Connection:
    """Everything needed to build a client, resolved and checked from the config."""

    #: ``scheme://host[:port][/account]`` without any query (no SAS).
    account_url: str
    container: str
    #: "connection-string", "sas" or "entra-id".
    auth: str
    secret: Secret | None

    @property
    def where(self) -> str:
        """Endpoint and container, for messages and as the progress store's target key."""
        return f"{self.account_url}/{self.container}"

    @property
    def description(self) -> str:
        label = {"connection-string": "connection string", "sas": "SAS token",
                 "entra-id": "Entra ID"}[self.auth]
        return f"Azure Blob {self.where} ({label})"


def classify_secret(raw: str) -> Secret:
    """Tell a connection string, a container SAS URL and a SAS token apart (see module doc)."""
    value = raw.strip()
    if "AccountName=" in value or "BlobEndpoint=" in value:
        return Secret("connection-string", value)
    if value.lower().startswith(("https://", "http://")):
        return Secret("sas-url", value)
    return Secret("sas-token", value.lstrip("?"))


def read_secret_file(path_text: str) -> str:
    """The secret kept in ``path_text``; refused when others could read it (POSIX)."""
    path = Path(path_text).expanduser()
    try:
        st = path.stat()
        if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"[target.secret_file] {path} can be read by other users "
                f"(mode {stat.S_IMODE(st.st_mode):o}): restrict it with 'chmod 600 {path}' "
                "so only the agent's user can read the storage secret"
            )
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"[target.secret_file] {path} cannot be read ({exc.strerror})"
        ) from None
    if not value:
        raise ConfigError(f"[target.secret_file] {path} is empty")
    return value


def _secret_from(t: TargetConfig) -> Secret | None:
    sources = [
        name
        for name, present in (
            ("connection_string", t.connection_string),
            ("sas_token", t.sas_token),
            ("secret_env", t.secret_env),
            ("secret_file", t.secret_file),
        )
        if present
    ]
    if len(sources) > 1:
        raise ConfigError(
            f"[target] sets {' and '.join(sources)}: configure exactly one source of the "
            "storage secret"
        )
    if t.connection_string:
        return Secret("connection-string", t.connection_string.strip())
    if t.sas_token:
        return Secret("sas-token", t.sas_token.strip().lstrip("?"))
    if t.secret_env:
        value = os.environ.get(t.secret_env, "").strip()
        if not value:
            raise ConfigError(
                f"[target.secret_env] names the environment variable {t.secret_env}, "
                "which is not set or empty"
            )
        return classify_secret(value)
    if t.secret_file:
        return classify_secret(read_secret_file(t.secret_file))
    return None


def _endpoint_from_connection_string(cs: str) -> tuple[str, str]:
    """(blob endpoint, account name) of a connection string, without its secret parts."""
    parts = dict(
        p.split("=", 1) for p in cs.split(";") if "=" in p
    )
    account = parts.get("AccountName", "")
    endpoint = parts.get("BlobEndpoint", "")
    if not endpoint:
        if not account:
            raise ConfigError(
                "the storage connection string has neither AccountName nor BlobEndpoint"
            )
        protocol = parts.get("DefaultEndpointsProtocol", "https")
        suffix = parts.get("EndpointSuffix", "core.windows.net")
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    return endpoint.rstrip("/"), account


def _split_account_url(account_url: str, container: str) -> tuple[str, str, str]:
    """(account URL without query, container, SAS token) from ``[target] account_url``.

    A container SAS URL carries the container as its last path segment and the token as
    its query."""
    split = urlsplit(account_url)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ConfigError(
            "[target.account_url] must look like https://<account>.blob.core.windows.net"
        )
    path = split.path.strip("/")
    sas = ""
    if split.query:
        sas = split.query
        head, _, last = path.rpartition("/")
        if last and (not container or container == last):
            container, path = last, head
        elif last:
            raise ConfigError(
                f"[target] container {container!r} differs from the container in the "
                "SAS URL"
            )
    url = urlunsplit((split.scheme, split.netloc, f"/{path}" if path else "", "", ""))
    return url, container, sas


def _sas_or(secret: Secret | None, sas_from_url: str) -> Secret | None:
    """The SAS token carried by the account URL, unless another secret is configured too."""
    if not sas_from_url:
        return secret
    if secret is not None:
        raise ConfigError(
            "[target.account_url] already carries a SAS token; remove the other secret"
        )
    return Secret("sas-token", sas_from_url)


def _check_container(container: str) -> None:
    if not container:
        raise ConfigError("[target.container] is empty: name the Azure Blob container")
    if not _CONTAINER_RE.match(container):
        raise ConfigError(
            f"[target.container] {container!r} is not a valid container name (3-63 lowercase "
            "letters, digits and single hyphens)"
        )


def resolve(t: TargetConfig) -> Connection:
    """Check the ``[target]`` keys of kind "azure" and decide how to authenticate."""
    secret = _secret_from(t)
    container = t.container.strip()
    account_url = t.account_url.strip()
    if secret is not None and secret.kind == "sas-url":
        if account_url:
            raise ConfigError(
                "[target] the secret is a full SAS URL and account_url is set too: keep one"
            )
        account_url, secret = secret.value, None
    if account_url:
        account_url, container, sas_from_url = _split_account_url(account_url, container)
        secret = _sas_or(secret, sas_from_url)
    _check_container(container)
    if secret is not None and secret.kind == "connection-string":
        endpoint, _ = _endpoint_from_connection_string(secret.value)
        return Connection(endpoint, container, "connection-string", secret)
    if secret is None and not t.use_default_credential:
        raise ConfigError(
            "no storage credentials: set [target] connection_string, sas_token, secret_env or "
            "secret_file, or use_default_credential = true"
        )
    if not account_url:
        raise ConfigError(
            "[target.account_url] is empty: set it (https://<account>.blob.core.windows.net) "
            "or use a connection string"
        )
    if secret is None:
        return Connection(account_url, container, "entra-id", None)
    if t.use_default_credential:
        raise ConfigError("[target] sets use_default_credential and a SAS token: choose one")
    return Connection(account_url, container, "sas", secret)


class BudgetRetry(ExponentialRetry):
    """Exponential backoff with jitter whose sleeps add up to at most ``budget`` seconds.

    The SDK retries connection errors, timeouts, 408 and 5xx (not 4xx: a 403 is never
    retried, so wrong credentials fail at once). Backoff doubles from ``first`` up to
    ``cap``; each sleep is drawn from [b/2, b] so parallel uploads do not retry in step.
    """

    def __init__(self, budget: float, first: float = 0.5, cap: float = 8.0) -> None:
        self.first, self.cap = first, cap
        total, retries = 0.0, 0
        while total + self._ceiling(retries) <= budget:
            total += self._ceiling(retries)
            retries += 1
        super().__init__(retry_total=retries, random_jitter_range=0)

    def _ceiling(self, count: int) -> float:
        return float(min(self.cap, self.first * 2**count))

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        ceiling = self._ceiling(int(settings["count"]))
        return random.uniform(ceiling / 2, ceiling)


class _PooledAdapter(HTTPAdapter):
    """Enough pooled connections for every upload thread, 64 KiB socket writes."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", 1 << 16)
        super().init_poolmanager(*args, **kwargs)


def _session(pool: int) -> requests.Session:
    session = requests.Session()
    # trust_env keeps HTTPS_PROXY / HTTP_PROXY / NO_PROXY working: clinics often sit behind
    # a proxy. Never turn it off.
    session.trust_env = True
    adapter = _PooledAdapter(
        pool_connections=4,
        pool_maxsize=pool,
        # requests must not retry by itself: the SDK's retry policy does, within its budget.
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def build_client(
    conn: Connection, *, retry_budget: float, pool: int, response_hook: Any = None
) -> ContainerClient:
    """The container client for ``conn`` with our retry policy, timeouts and pool size."""
    from azure.core.pipeline.transport import RequestsTransport

    kwargs: dict[str, Any] = {
        "retry_policy": BudgetRetry(retry_budget),
        "transport": RequestsTransport(session=_session(pool), session_owner=True),
        # Bounded waits: a black-holed endpoint must not hold a worker for minutes.
        "connection_timeout": 10,
        "read_timeout": 60,
    }
    if response_hook is not None:
        kwargs["raw_response_hook"] = response_hook
    if conn.auth == "connection-string":
        assert conn.secret is not None
        return ContainerClient.from_connection_string(
            conn.secret.value, conn.container, **kwargs
        )
    if conn.auth == "sas":
        assert conn.secret is not None
        return ContainerClient(conn.account_url, conn.container, credential=conn.secret.value,
                               **kwargs)
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ConfigError(
            "[target.use_default_credential] needs azure-identity: "
            "pip install 'clinic2cloud[identity]'"
        ) from None
    return ContainerClient(conn.account_url, conn.container,
                           credential=DefaultAzureCredential(), **kwargs)
