"""Azure SDK errors converted into Clinic2Cloud's error families, at the module boundary.

The messages are written for an IT administrator and never quote the SDK's own text: a
connection error's text carries the request URL, SAS signature included. Only the HTTP
status and the storage error code (``AuthenticationFailed``, ``ContainerNotFound`` ...) are
kept. Conversions are raised ``from None`` so no chained traceback can leak the URL either.
"""

from __future__ import annotations

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from agent.errors import (
    Clinic2CloudError,
    ConfigError,
    CredentialsError,
    TargetUnavailable,
)

#: Storage error codes meaning "the service lost the uncommitted blocks we named".
LOST_BLOCKS = frozenset({"InvalidBlockList", "InvalidBlobOrBlock", "BlockListTooLong"})
#: The name is taken (our If-None-Match: * lost): 409 BlobAlreadyExists or 412 ConditionNotMet.
TAKEN = frozenset({"BlobAlreadyExists", "ConditionNotMet"})


class ContainerNotFound(ConfigError):
    """The configured container does not exist (a SAS cannot create it): fix the config or
    create the container. A :class:`ConfigError` because no retry can help by itself."""


def status_of(exc: BaseException) -> int:
    return int(getattr(exc, "status_code", None) or 0)


def code_of(exc: BaseException) -> str:
    """The storage error code as a plain string ('' when there is none)."""
    code = getattr(exc, "error_code", None)
    if code is None:
        return ""
    return str(getattr(code, "value", code))


def is_taken(exc: BaseException) -> bool:
    """Whether a conditional create failed because the blob already exists."""
    return status_of(exc) in (409, 412) and (code_of(exc) in TAKEN or not code_of(exc))


def is_read_denied(exc: BaseException) -> bool:
    """A read refused only because the credentials may not read (an upload-only SAS)."""
    return status_of(exc) == 403 and code_of(exc) == "AuthorizationPermissionMismatch"


def convert(exc: BaseException, *, action: str, where: str) -> Clinic2CloudError:
    """The Clinic2Cloud error for an SDK exception raised while ``action`` on ``where``.

    ``where`` names the endpoint and container (never a secret): it is what the
    administrator looks at.
    """
    status, code = status_of(exc), code_of(exc)
    detail = f"HTTP {status} {code}".strip() if status else type(exc).__name__
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return CredentialsError(
            f"Azure Storage refused the credentials while {action} ({detail}) on {where}: "
            "the account key or SAS token is wrong, has expired, or lacks the create and "
            "write permissions on the container. Get a valid one from your IT administrator "
            "and update the configuration; uploads stay paused until then."
        )
    if isinstance(exc, ResourceNotFoundError) and code == "ContainerNotFound":
        return ContainerNotFound(
            f"the container of {where} does not exist (HTTP 404 ContainerNotFound): create "
            "it in the storage account, or correct [target] container / account_url."
        )
    if isinstance(exc, HttpResponseError) and status:
        return TargetUnavailable(
            f"Azure Storage answered {detail} while {action} on {where}; "
            "the series stays queued and is retried later."
        )
    if isinstance(exc, AzureError):
        return TargetUnavailable(
            f"cannot reach Azure Storage at {where} while {action} ({type(exc).__name__}): "
            "check the network connection, the proxy settings (HTTPS_PROXY, NO_PROXY) and "
            "the firewall; the series stays queued and is retried by itself."
        )
    return TargetUnavailable(
        f"unexpected failure while {action} on {where} ({type(exc).__name__}); "
        "the series stays queued and is retried."
    )
