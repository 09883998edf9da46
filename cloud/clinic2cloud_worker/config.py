"""The worker's configuration: the agent's ``[target]`` storage keys plus ``[worker]``.

The same TOML file the agent uses for its Azure target can be given to the worker: it reads
the storage settings of ``[target]`` (a connection string, or an account URL with a SAS
token or Entra ID, the delivery ``container``, the ``queue_name``) and its own ``[worker]``
section. The agent's other sections are accepted and ignored, so one file can serve both;
unknown keys and wrong types are a :class:`~clinic2cloud_worker.errors.WorkerConfigError`
naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinic2cloud_worker.errors import WorkerConfigError

#: The step that ships with the worker: brain mask, volume, DICOM SEG and SR.
REFERENCE_STEP = "clinic2cloud-reference-step {input} {output}"

#: Sections of the agent's own configuration that the worker ignores.
_AGENT_SECTIONS = frozenset({"site", "watch", "pipeline", "deid", "deface", "tray", "log",
                             "results", "dicom", "policy", "select", "pixels", "control"})


@dataclass(frozen=True)
class StorageConfig:
    """The ``[target]`` keys the worker reads (the agent's names and meanings)."""

    kind: str = "azure"
    container: str = ""
    connection_string: str = ""
    account_url: str = ""
    sas_token: str = ""
    secret_env: str = ""
    secret_file: str = ""
    use_default_credential: bool = False
    queue_name: str = ""


@dataclass(frozen=True)
class WorkerConfig:
    """``[worker]``: where results go and what processing runs."""

    #: Container the results are written to, under the delivery's own pseudonymous path.
    results_container: str = "results"
    #: The processing step: a command line (``{input}`` and ``{output}`` are replaced by
    #: the folders; without them both are appended), or ``image:<reference>`` for a
    #: container image run by ``container_runtime`` with the delivery mounted at /input.
    step: str = REFERENCE_STEP
    #: A short name for the step, written into the results manifest.
    step_name: str = ""
    #: docker or podman, for ``step = "image:..."``.
    container_runtime: str = "docker"
    #: Queue of manifest notifications (Event Grid or the agent); default: [target]'s.
    queue_name: str = ""
    #: The step is killed after this long and the attempt counts as failed.
    step_timeout_minutes: float = 30.0
    #: Attempts at one delivery before its failure is final (the agent is told).
    max_attempts: int = 3
    #: Messages one run takes before it exits (a Container Apps job execution takes one).
    max_messages: int = 1
    #: Seconds between queue polls in ``--listen`` mode.
    poll_seconds: float = 2.0
    #: Deliveries larger than this are refused (a wrong manifest must not fill the disk).
    max_delivery_gb: float = 20.0
    #: Scratch folder for downloads and step outputs; empty: the system's temporary folder.
    work_dir: str = ""


@dataclass(frozen=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    source: str = ""

    @property
    def queue_name(self) -> str:
        return self.worker.queue_name or self.storage.queue_name or "manifests"


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    def wrong(expected: str) -> WorkerConfigError:
        return WorkerConfigError(
            f"{source}: [{key}] must be {expected}, not {type(value).__name__} {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if not isinstance(value, str):
        raise wrong("a string")
    return value


def _section(cls: type, raw: Any, name: str, source: str, *,
             ignore: frozenset[str] = frozenset()) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise WorkerConfigError(f"{source}: [{name}] must be a table")
    defaults = cls()
    names = {f.name for f in dataclasses.fields(defaults)}
    values = {}
    for key, value in raw.items():
        if key in ignore:
            continue
        if key not in names:
            raise WorkerConfigError(f"{source}: unknown key {key!r} in [{name}]")
        values[key] = _coerce(value, getattr(defaults, key), f"{name}.{key}", source)
    return cls(**values)


#: [target] keys of the agent that concern uploads only.
_UPLOAD_KEYS = frozenset({"path", "concurrency", "max_mbps", "block_size_mb"})


def load(path: Path) -> Config:
    """Read and check the worker's configuration file."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise WorkerConfigError(f"{source}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise WorkerConfigError(f"{source}: cannot be read ({exc.strerror})") from None
    for section in raw:
        if section not in ("target", "worker") and section not in _AGENT_SECTIONS:
            raise WorkerConfigError(f"{source}: unknown section [{section}]")
    storage = _section(StorageConfig, raw.get("target"), "target", source, ignore=_UPLOAD_KEYS)
    worker = _section(WorkerConfig, raw.get("worker"), "worker", source)
    cfg = Config(storage=storage, worker=worker, source=source)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    src = cfg.source or "configuration"
    if cfg.storage.kind != "azure":
        raise WorkerConfigError(
            f"{src}: [target.kind] must be \"azure\" for the worker (it reads deliveries from "
            f"Azure Blob Storage), not {cfg.storage.kind!r}")
    w = cfg.worker
    if not w.step.strip():
        raise WorkerConfigError(f"{src}: [worker.step] is empty: name the processing command "
                                "or image:<container image>")
    for key, value in (("step_timeout_minutes", w.step_timeout_minutes),
                       ("max_attempts", w.max_attempts), ("max_messages", w.max_messages),
                       ("poll_seconds", w.poll_seconds), ("max_delivery_gb", w.max_delivery_gb)):
        if value <= 0:
            raise WorkerConfigError(f"{src}: [worker.{key}] must be greater than 0, not {value}")
    if w.container_runtime not in ("docker", "podman"):
        raise WorkerConfigError(f"{src}: [worker.container_runtime] must be docker or podman")
    if w.results_container == cfg.storage.container:
        raise WorkerConfigError(
            f"{src}: [worker.results_container] must differ from [target.container]: results "
            "beside the deliveries would be taken for deliveries")


def work_root(cfg: Config) -> Path:
    """Where the worker downloads deliveries and lets the step write."""
    if cfg.worker.work_dir:
        return Path(cfg.worker.work_dir).expanduser()
    return Path(tempfile.gettempdir()) / "clinic2cloud-worker"
