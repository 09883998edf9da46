"""Credentials and failures: upload-only SAS, wrong key, expired SAS, missing container,
storage down, secrets from env/file, and no secret in any message or log."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from agent.config import Config
from agent.errors import ConfigError, CredentialsError, TargetUnavailable
from agent.sync.azure import AzureTarget
from agent.sync.azure_auth import classify_secret, resolve
from agent.sync.azure_errors import ContainerNotFound

from .azurite import (
    ACCOUNT,
    ACCOUNT_KEY,
    Azurite,
    azure_config,
    blobs_under,
    free_port,
    make_delivery,
)

MB = 1 << 20


def sas(container: str, *, hours: float = 1.0, **perms: bool) -> str:
    return generate_container_sas(
        ACCOUNT, container, account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(**perms),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours),
    )


def sas_config(tmp_path: Path, server: Azurite, container: str, token: str,
               **target: object) -> Config:
    return azure_config(tmp_path, server, container, connection_string="",
                        account_url=server.url, sas_token=token, **target)


def test_upload_only_sas_delivers_resumes_and_is_idempotent(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    token = sas(container, create=True, write=True)
    cfg = sas_config(tmp_path, azurite, container, token, block_size_mb=1)
    delivery = make_delivery(tmp_path, [2 * MB + 9, 1234])
    target = AzureTarget(cfg)
    try:
        assert target.check() == []
        first = target.deliver(delivery)
        again = target.deliver(delivery)
    finally:
        target.close()
    assert not first.already_present
    assert again.already_present and again.bytes_sent == 0
    names = set(blobs_under(azurite, container, delivery.location + "/"))
    assert names == {f"{delivery.location}/{f.path}" for f in delivery.files} | {
        f"{delivery.location}/manifest.json"
    }
    assert "sig=" not in target.description and token not in target.description


def test_container_sas_url_as_account_url(tmp_path: Path, azurite: Azurite, container: str) -> None:
    token = sas(container, create=True, write=True)
    cfg = azure_config(tmp_path, azurite, "", connection_string="",
                       account_url=f"{azurite.url}/{container}?{token}")
    target = AzureTarget(cfg)
    try:
        target.deliver(make_delivery(tmp_path, [100]))
    finally:
        target.close()
    assert target.description.endswith(f"/{container} (SAS token)")


def _fails_fast(target: AzureTarget, tmp_path: Path, exc_type: type[Exception]) -> Exception:
    start = time.monotonic()
    try:
        with pytest.raises(exc_type) as info:
            target.deliver(make_delivery(tmp_path, [3 * MB, 100]))
    finally:
        target.close()
    assert time.monotonic() - start < 5.0
    return info.value


def test_wrong_key_is_a_credentials_error_without_retry_storm(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    wrong = azurite.connection_string.replace(ACCOUNT_KEY, "A" * 86 + "==")
    target = AzureTarget(azure_config(tmp_path, azurite, container, connection_string=wrong,
                                      block_size_mb=1, concurrency=2))
    err = _fails_fast(target, tmp_path, CredentialsError)
    # One refused request per worker in flight at most; nothing retried.
    assert target.stats.requests <= 2
    assert "wrong, has expired" in str(err) and "A" * 20 not in str(err)
    # No chained SDK exception that a traceback could print (its text holds the URL).
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_expired_sas_is_a_credentials_error(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    token = sas(container, hours=-1, create=True, write=True)
    target = AzureTarget(sas_config(tmp_path, azurite, container, token))
    err = _fails_fast(target, tmp_path, CredentialsError)
    assert target.stats.requests <= 4
    assert token not in str(err) and "sig=" not in str(err)


def test_read_only_sas_is_a_credentials_error(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    token = sas(container, read=True, list=True)
    target = AzureTarget(sas_config(tmp_path, azurite, container, token))
    _fails_fast(target, tmp_path, CredentialsError)


def test_missing_container_is_a_config_error(tmp_path: Path, azurite: Azurite) -> None:
    target = AzureTarget(azure_config(tmp_path, azurite, "no-such-container"))
    err = _fails_fast(target, tmp_path, ContainerNotFound)
    assert isinstance(err, ConfigError) and "create it" in str(err)


def test_storage_not_running_is_target_unavailable_in_bounded_time(tmp_path: Path) -> None:
    down = Azurite(tmp_path / "never-started", port=free_port())
    target = AzureTarget(azure_config(tmp_path, down, "clinic"), retry_budget=3.0)
    start = time.monotonic()
    try:
        with pytest.raises(TargetUnavailable) as info:
            target.deliver(make_delivery(tmp_path, [1000]))
    finally:
        target.close()
    assert 0.5 < time.monotonic() - start < 8.0  # it did retry, within its budget
    assert "cannot reach" in str(info.value) and "HTTPS_PROXY" in str(info.value)


def test_check_explains_problems(tmp_path: Path, azurite: Azurite, container: str) -> None:
    good = AzureTarget(azure_config(tmp_path, azurite, container))
    wrong_key = azurite.connection_string.replace(ACCOUNT_KEY, "B" * 86 + "==")
    bad = AzureTarget(azure_config(tmp_path, azurite, container, connection_string=wrong_key))
    missing = AzureTarget(azure_config(tmp_path, azurite, "missing-one"))
    down = Azurite(tmp_path / "down", port=free_port())
    offline = AzureTarget(azure_config(tmp_path, down, container), retry_budget=1.0)
    try:
        assert good.check() == []
        probes = [n for n in blobs_under(azurite, container)
                  if n.startswith("SITE1/.clinic2cloud-doctor/")]
        assert len(probes) == 1
        assert any("refused the credentials" in p for p in bad.check())
        assert any("does not exist" in p for p in missing.check())
        assert any("cannot reach" in p for p in offline.check())
    finally:
        for t in (good, bad, missing, offline):
            t.close()


def test_no_secret_in_logs(
    tmp_path: Path, azurite: Azurite, container: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = sas(container, create=True, write=True)
    signature = token.split("sig=")[1].split("&")[0]
    caplog.set_level(logging.DEBUG)
    target = AzureTarget(sas_config(tmp_path, azurite, container, token, block_size_mb=1))
    try:
        target.deliver(make_delivery(tmp_path, [2 * MB, 10]))
    finally:
        target.close()
    expired = sas(container, hours=-1, create=True, write=True)
    target = AzureTarget(sas_config(tmp_path, azurite, container, expired))
    try:
        with pytest.raises(CredentialsError) as info:
            target.deliver(make_delivery(tmp_path, [10]))
    finally:
        target.close()
    down = Azurite(tmp_path / "down", port=free_port())  # retried connection errors too
    target = AzureTarget(sas_config(tmp_path, down, container, token), retry_budget=0.5)
    try:
        with pytest.raises(TargetUnavailable) as offline:
            target.deliver(make_delivery(tmp_path, [10]))
    finally:
        target.close()
    text = caplog.text + str(info.value) + str(offline.value)
    assert signature not in text and signature.replace("%2B", "+") not in text
    assert ACCOUNT_KEY not in text


# -- secrets from the environment or a file ----------------------------------------------


def test_secret_from_env_is_classified(
    tmp_path: Path, azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C2C_TEST_SECRET", azurite.connection_string)
    cfg = azure_config(tmp_path, azurite, container, connection_string="",
                       secret_env="C2C_TEST_SECRET")
    target = AzureTarget(cfg)
    try:
        assert target.check() == []
    finally:
        target.close()
    monkeypatch.setenv("C2C_TEST_SECRET", "?" + sas(container, create=True, write=True))
    cfg = azure_config(tmp_path, azurite, container, connection_string="",
                       account_url=azurite.url, secret_env="C2C_TEST_SECRET")
    target = AzureTarget(cfg)
    try:
        target.deliver(make_delivery(tmp_path, [50]))
    finally:
        target.close()


def test_secret_file_must_be_private(tmp_path: Path, azurite: Azurite, container: str) -> None:
    secret = tmp_path / "storage.secret"
    secret.write_text(sas(container, create=True, write=True) + "\n")
    cfg = azure_config(tmp_path, azurite, container, connection_string="",
                       account_url=azurite.url, secret_file=str(secret))
    if os.name == "posix":
        secret.chmod(0o644)
        with pytest.raises(ConfigError, match="chmod 600"):
            AzureTarget(cfg)
    secret.chmod(0o600)
    target = AzureTarget(cfg)
    try:
        target.deliver(make_delivery(tmp_path, [50]))
    finally:
        target.close()


def test_classify_secret() -> None:
    assert classify_secret("AccountName=x;AccountKey=y").kind == "connection-string"
    assert classify_secret("BlobEndpoint=https://x/;SharedAccessSignature=sv=1").kind == (
        "connection-string"
    )
    assert classify_secret("https://acct.blob.core.windows.net/c?sv=1&sig=2").kind == "sas-url"
    token = classify_secret(" ?sv=2022&sig=abc \n")
    assert (token.kind, token.value) == ("sas-token", "sv=2022&sig=abc")
    assert "abc" not in repr(token)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"connection_string": ""}, "no storage credentials"),
        ({"container": ""}, "container] is empty"),
        ({"container": "Bad_Name"}, "not a valid container name"),
        ({"sas_token": "sv=1"}, "exactly one source"),
        ({"connection_string": "", "sas_token": "sv=1"}, "account_url] is empty"),
        ({"connection_string": "", "secret_env": "C2C_UNSET_VARIABLE"}, "not set"),
        ({"connection_string": "", "account_url": "ftp://x"}, "must look like"),
    ],
)
def test_config_errors(tmp_path: Path, azurite: Azurite, target: dict[str, object],
                       message: str) -> None:
    fields = dict(target)
    container = str(fields.pop("container", "clinic"))
    cfg = azure_config(tmp_path, azurite, container, **fields)
    with pytest.raises(ConfigError, match=message):
        resolve(cfg.target)


def test_proxy_environment_is_honoured(tmp_path: Path, azurite: Azurite, container: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY is used: a proxy that does not exist makes the storage unreachable,
    and NO_PROXY for the host bypasses it again."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.setenv("HTTPS_PROXY", dead_proxy)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    target = AzureTarget(azure_config(tmp_path, azurite, container), retry_budget=0.5)
    try:
        with pytest.raises(TargetUnavailable):
            target.deliver(make_delivery(tmp_path, [10]))
    finally:
        target.close()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    target = AzureTarget(azure_config(tmp_path, azurite, container), retry_budget=0.5)
    try:
        target.deliver(make_delivery(tmp_path, [10]))
    finally:
        target.close()
