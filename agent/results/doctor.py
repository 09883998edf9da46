"""``clinic2cloud doctor`` for the results loop: can this workstation read the results
container the cloud worker writes to, and write the folder results are filed into.

A results container the agent cannot list means results never come home, silently, hours
after a delivery; the doctor says so on the day of installation instead.
"""

from __future__ import annotations

from pathlib import Path

from azure.core.exceptions import AzureError

from agent.checks import writable_problem
from agent.config import Config
from agent.errors import Clinic2CloudError, CredentialsError
from agent.sync.azure_errors import ContainerNotFound, convert


def results_checks(cfg: Config) -> tuple[list[str], list[str]]:
    """(lines to show, problems found); nothing when results are not brought home."""
    r = cfg.results
    if not r.enabled:
        return [], []
    lines: list[str] = []
    problems: list[str] = []
    if r.folder:
        problem = writable_problem(Path(r.folder).expanduser())
        if problem:
            problems.append(f"results folder: {problem}")
        else:
            lines.append(f"ok: results are filed into {r.folder}")
    try:
        where = _list_results_container(cfg)
        lines.append(f"ok: the results container ({where}) can be listed and read")
    except Clinic2CloudError as exc:
        problems.append(f"results container: {exc}")
    return lines, problems


def _list_results_container(cfg: Config) -> str:
    """List one page of the results container, as the results poller does."""
    from agent.results.fetch import open_results

    client, where = open_results(cfg)
    try:
        for _page in client.list_blobs(results_per_page=1).by_page():
            break
    except AzureError as exc:
        error = convert(exc, action="listing the results container", where=where)
        if isinstance(error, CredentialsError):
            # convert() speaks of uploads; here the agent needs to read and list.
            raise CredentialsError(
                f"Azure Storage refused the credentials while listing {where}: they lack "
                "the read and list permissions on the results container, or have expired. "
                "Set [results] secret_file to a SAS with read and list on that container "
                "(or give the [target] credentials those rights).") from None
        if isinstance(error, ContainerNotFound):
            raise ContainerNotFound(
                f"the results container of {where} does not exist: create it (the cloud "
                "worker writes results there) or correct [results] container.") from None
        raise error from None
    finally:
        client.close()
    return where
