"""``clinic2cloud doctor`` for the results loop, against a real Azurite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from agent.config import Config
from agent.results.doctor import results_checks
from tests.sync.azurite import ACCOUNT, ACCOUNT_KEY

from .conftest import Storage


def _config(make_config: Callable[..., Config], storage: Storage, tmp_path: Path,
            **results: object) -> Config:
    fields: dict[str, object] = {"results_enabled": True,
                                 "results_folder": str(tmp_path / "results"),
                                 "results_container": storage.results}
    fields.update({f"results_{k}": v for k, v in results.items()})
    return make_config(target_kind="azure", target_container=storage.deliveries,
                       target_connection_string=storage.connection_string, **fields)


def test_a_usable_results_loop_passes(make_config: Callable[..., Config], storage: Storage,
                                      tmp_path: Path) -> None:
    lines, problems = results_checks(_config(make_config, storage, tmp_path))
    assert problems == []
    assert any("results container" in line and "listed" in line for line in lines), lines
    assert (tmp_path / "results").is_dir()


def test_results_off_checks_nothing(make_config: Callable[..., Config], storage: Storage,
                                    tmp_path: Path) -> None:
    cfg = _config(make_config, storage, tmp_path, enabled=False, container="nowhere")
    assert results_checks(cfg) == ([], [])


@pytest.mark.parametrize("case", ["missing container", "folder is a file", "write-only SAS"])
def test_each_broken_part_is_named_with_what_to_do(make_config: Callable[..., Config],
                                                   storage: Storage, tmp_path: Path,
                                                   case: str) -> None:
    if case == "missing container":
        cfg = _config(make_config, storage, tmp_path, container="no-such-results")
        expected = "[results] container"
    elif case == "folder is a file":
        (tmp_path / "taken").write_text("")
        cfg = _config(make_config, storage, tmp_path, folder=str(tmp_path / "taken"))
        expected = "results folder:"
    else:
        token = generate_container_sas(
            ACCOUNT, storage.results, account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(write=True, create=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        secret = tmp_path / "results.sas"
        secret.write_text(token)
        secret.chmod(0o600)
        cfg = _config(make_config, storage, tmp_path, secret_file=str(secret))
        cfg = cfg.__class__(**{**cfg.__dict__, "target": cfg.target.__class__(**{
            **cfg.target.__dict__, "connection_string": "",
            "account_url": storage.blob.url, "sas_token": token})})
        expected = "read and list"
    lines, problems = results_checks(cfg)
    assert len(problems) == 1 and expected in problems[0], (lines, problems)
    assert ACCOUNT_KEY[:12] not in " ".join(problems)
