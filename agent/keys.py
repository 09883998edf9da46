"""The secrets that key every pseudonym, UID and hash.

* The **site secret** keys what must agree across every workstation of a site: remapped
  UIDs, patient pseudonyms, date offsets. IT deploys one file (``[site] secret_file``);
  without it each installation uses its own secret.
* The **installation secret** keys the ledger's hashes of source identifiers, so a
  ledger (or support bundle) cannot be matched against a list of known UIDs.

Both are 32 random bytes, created on first use in files only the user can read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from agent.errors import ConfigError, FatalError
from agent.paths import private_dir, refuse_if_shared


def _create_secret(path: Path) -> bytes:
    private_dir(path.parent)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.hex().encode())
        fh.flush()
        os.fsync(fh.fileno())
    try:
        # link() refuses to overwrite: if another process won the race, use its key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_secret(path)


def read_secret(path: Path, what: str = "secret file") -> bytes:
    """Read a secret file: hex text or raw bytes, at least 16 bytes of key material.

    Refused (ConfigError, with the chmod to run) when other users may read or write it: a
    key that others can read keys nothing.
    """
    refuse_if_shared(path, what)
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: the {what} cannot be read ({exc.strerror})") from None
    try:
        key = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = data
    if len(key) < 16:
        raise ConfigError(f"{path}: the secret file holds fewer than 16 bytes of key material")
    return key


def installation_secret(path: Path) -> bytes:
    """The per-installation secret, created on first run."""
    if path.exists():
        return read_secret(path, "installation key")
    try:
        return _create_secret(path)
    except OSError as exc:
        raise FatalError(
            f"cannot create the installation secret in {path.parent} ({exc.strerror}); "
            "check that the folder is writable"
        ) from None


def site_secret(secret_file: str, fallback: Path) -> bytes:
    """The site secret from ``[site] secret_file``, else the installation's own."""
    if secret_file:
        return read_secret(Path(secret_file).expanduser(), "site key ([site] secret_file)")
    return installation_secret(fallback)


def keyed_hash(key: bytes, *parts: str, length: int = 32) -> str:
    """HMAC-SHA256 of the parts, hex, truncated to ``length`` characters."""
    msg = "\x1f".join(parts).encode("utf-8", "surrogateescape")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:length]
