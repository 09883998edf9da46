"""Typed configuration: TOML files into frozen dataclasses.

Two files are read, the machine-wide one first (what IT deploys), then the user's, whose
keys override it. A machine-wide ``[policy] locked = ["section.key", ...]`` list makes keys
that the user's file may not change. Every key has a default; unknown keys and values of
the wrong type are a :class:`~agent.errors.ConfigError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.paths import AgentPaths, default_paths


@dataclass(frozen=True)
class SiteConfig:
    #: Prefix of every pseudonym and the first level of delivered paths. Letters, digits, - and _.
    name: str = "SITE"
    #: File holding the site secret that keys UIDs, pseudonyms and date shifts. IT deploys the
    #: same file to every workstation of a site so results link up. Empty: one secret per
    #: installation, created on first run in the state folder.
    secret_file: str = ""


@dataclass(frozen=True)
class WatchConfig:
    folder: str = ""
    stable_seconds: float = 30.0
    #: Polling observer instead of OS notifications (network shares).
    polling: bool = False
    #: Full rescan period that reconciles events the OS may have lost.
    rescan_seconds: float = 60.0
    #: A series with a file still incomplete, and no file changed for this long, is given
    #: up on (quarantined: "export it again"). Minutes: a viewer writes a series in seconds.
    max_wait_seconds: float = 600.0
    #: A series still incomplete this long after its first file appeared is shown as
    #: needing attention (tray, status), well before it is given up on.
    attention_seconds: float = 120.0
    #: Opt-in: delete the exported files once their series is delivered and verified.
    delete_after_delivery: bool = False


@dataclass(frozen=True)
class PipelineConfig:
    #: Series processed at once; 0 means the number of cores.
    workers: int = 0


@dataclass(frozen=True)
class DeidConfig:
    retain_longitudinal_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    retain_safe_private: bool = True
    #: Modalities / SOP classes that would normally be quarantined as possibly carrying
    #: identity in their pixels, but that this site accepts (e.g. ["US"]).
    allow_pixel_identity: tuple[str, ...] = ()
    #: Largest date shift in days (the per-patient offset is keyed, between 1 and this).
    max_date_shift_days: int = 3650
    #: Ages above this many years are written as one year more, "090Y" (HIPAA Safe
    #: Harbor aggregates ages over 89); 0 keeps every age as it is.
    age_cap_years: int = 89
    #: Site files of imaging terms that descriptors keep (one term a line, # comments),
    #: added to the shipped vocabulary (agent/deid/data/vocabulary).
    vocabulary_files: tuple[str, ...] = ()
    #: Site terms that descriptors keep, e.g. ["NEUROPROT7", "Lumbar_Routine"].
    vocabulary_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class DefaceConfig:
    enabled: bool = True
    #: Older name of ``[send] localizers`` (false sends localizers). Localizers are now
    #: withheld, not quarantined.
    quarantine_localizers: bool = True
    #: Keep a before/after render of every defaced series in the state folder.
    renders: bool = True
    #: A series that cannot place the face by itself (a short or thin stack) waits this long
    #: for another series of its study (a 3-D T1) before it is quarantined.
    partner_wait_minutes: float = 30.0


@dataclass(frozen=True)
class SendConfig:
    """What this site sends (the ``select`` stage, :mod:`agent.policy`). A series not sent
    ends *withheld* with its reason: recorded and visible, no alarm."""

    #: Only these modalities are sent (e.g. ["MR", "CT"]); empty: every modality.
    modalities: tuple[str, ...] = ()
    #: A series whose Image Type holds any of these values is withheld (e.g. ["DERIVED"]).
    exclude_image_types: tuple[str, ...] = ()
    #: Regular expression (case-insensitive) on Series Description and Protocol Name: a
    #: series that matches is withheld.
    exclude_descriptions: str = ""
    #: Regular expression: when set, only series whose description matches are sent.
    include_descriptions: str = ""
    #: Send only 3-D acquisitions (MR Acquisition Type 3D; CT always counts as 3-D).
    only_3d: bool = False
    #: Localizers/scouts are withheld unless true (then defaced like any image series).
    #: Screen captures are the pixels stage's: ``[pixels] deliver_captures``.
    localizers: bool = False
    #: Reports (SR, Phoenix protocol reports, documents) and raw data are withheld unless
    #: true (then the de-identifier's pixel-identity rules decide).
    reports: bool = False
    raw_data: bool = False


@dataclass(frozen=True)
class PixelsConfig:
    """Burned-in text, hidden bits and embedded bytes (the ``pixels`` stage)."""

    #: Text on an image that shows an identifier of the study: "redact" (the line is filled
    #: with its background) or "quarantine" (the series is kept back for a person).
    on_identifier: str = "redact"
    #: Redact every line of text found, identifier or not (like REDACT_ALL_TEXT).
    redact_all_text: bool = False
    #: Secondary captures, screen saves and derived images are delivered once their text is
    #: checked (and redacted); false withholds them by policy.
    deliver_captures: bool = True
    #: Folder holding Tesseract's eng.traineddata; empty: the platform's usual places.
    tessdata: str = ""


@dataclass(frozen=True)
class TargetConfig:
    kind: str = "folder"
    #: Folder target: the outbox.
    path: str = ""
    #: Folder target: deliveries readable by the outbox folder's group (folders 0750, files
    #: 0640), for an uploader under a service account; false: this user's alone (0700/0600).
    group_readable: bool = False
    # Azure target ---------------------------------------------------------------
    container: str = ""
    connection_string: str = ""
    account_url: str = ""
    sas_token: str = ""
    #: Name of an environment variable / path of a file holding the secret instead.
    secret_env: str = ""
    secret_file: str = ""
    #: Use DefaultAzureCredential (needs the azure-identity extra) with account_url.
    use_default_credential: bool = False
    #: Optional Azure Storage Queue notified with the manifest's blob name.
    queue_name: str = ""
    concurrency: int = 4
    #: Upload bandwidth cap in megabits per second; 0 means no cap.
    max_mbps: float = 0.0
    block_size_mb: int = 4


@dataclass(frozen=True)
class ResultsConfig:
    """``[results]``: results of cloud processing brought home and re-identified locally."""

    enabled: bool = False
    #: Re-identified result objects land here (one folder per patient and study).
    folder: str = ""
    #: And/or are sent by C-STORE to this node: "AE@host:port".
    pacs: str = ""
    #: The container the cloud worker writes results to (same account as [target]).
    container: str = "results"
    #: A file holding a SAS (read + list) for the results container, when the [target]
    #: credentials are an upload-only SAS; empty: the [target] credentials.
    secret_file: str = ""
    #: Seconds between looks for the results of one delivery; backs off up to the maximum.
    poll_seconds: float = 10.0
    max_poll_seconds: float = 300.0
    #: No results after this long: the delivery is shown as timed out (still watched).
    timeout_minutes: float = 60.0
    #: Days the encrypted re-link store keeps what restores identity; 0 = for ever.
    relink_retention_days: int = 365


@dataclass(frozen=True)
class LimitsConfig:
    """What one series may cost before it is read (a file claiming 4 GB of pixels is
    refused before it is copied, let alone decoded)."""

    #: Largest exported file, and largest decoded pixel data of one file, in MB.
    max_file_mb: int = 2048
    #: Largest decoded pixel data of a whole series, in MB.
    max_series_mb: int = 4096
    #: A series during whose processing the agent died this many times (a crash, an
    #: out-of-memory kill) is quarantined as the likely cause, so that the others go on.
    max_crashes: int = 3


@dataclass(frozen=True)
class TrayConfig:
    notifications: bool = True
    autostart: bool = False


@dataclass(frozen=True)
class DicomConfig:
    """The DICOM node: a C-STORE SCP that PACS and viewers send to (off by default), and
    the calling identity and TLS files the agent uses when it sends results (C-STORE SCU)."""

    listen: bool = False
    ae_title: str = "CLINIC2CLOUD"
    #: TCP port; 0 picks a free one (its number is shown by status and doctor).
    port: int = 11112
    #: Local address to listen on; empty: every interface.
    bind_address: str = ""
    #: Calling AE titles allowed to associate; empty: any.
    allowed_callers: tuple[str, ...] = ()
    #: IP addresses or networks (CIDR, e.g. "10.1.2.0/24") allowed to connect; empty: any.
    allowed_addresses: tuple[str, ...] = ()
    #: Associations at once; more are refused (transient, the sender retries).
    max_associations: int = 8
    #: Quiet time after which received instances form a series; 0: [watch] stable_seconds.
    stable_seconds: float = 0.0
    #: A peer silent this long during an association is dropped.
    timeout_seconds: float = 60.0
    #: DICOM TLS: certificate and key (PEM) of this node; both set turns TLS on.
    tls_certificate: str = ""
    tls_key: str = ""
    #: CA bundle (PEM) that callers' (and PACS') certificates must chain to; empty: with TLS
    #: on, callers need no certificate (server authentication only).
    tls_ca: str = ""
    #: Sending results: attempts per object before it is reported failed.
    send_attempts: int = 3
    #: Send to the PACS over DICOM TLS (its certificate checked against tls_ca, else the
    #: system's roots; this node's certificate presented when set).
    send_tls: bool = False


@dataclass(frozen=True)
class DisplayConfig:
    """What this workstation's own views (tray window, notifications, ``status``) show."""

    #: Show patient name, description, scan date and export folder of each series, read
    #: at display time from the local copies (never stored). Turn off on shared screens.
    local_identity: bool = True


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    site: SiteConfig = field(default_factory=SiteConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    deid: DeidConfig = field(default_factory=DeidConfig)
    deface: DefaceConfig = field(default_factory=DefaceConfig)
    pixels: PixelsConfig = field(default_factory=PixelsConfig)
    send: SendConfig = field(default_factory=SendConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    tray: TrayConfig = field(default_factory=TrayConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    log: LogConfig = field(default_factory=LogConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    #: Where the agent keeps its state, logs and config (not a TOML section).
    paths: AgentPaths = field(default_factory=default_paths)
    #: The files the configuration was read from, in order (not a TOML section).
    sources: tuple[str, ...] = ()

    @property
    def worker_count(self) -> int:
        return self.pipeline.workers or (os.cpu_count() or 1)


_SECTIONS: dict[str, type] = {
    "site": SiteConfig,
    "watch": WatchConfig,
    "pipeline": PipelineConfig,
    "deid": DeidConfig,
    "deface": DefaceConfig,
    "pixels": PixelsConfig,
    "send": SendConfig,
    "target": TargetConfig,
    "tray": TrayConfig,
    "dicom": DicomConfig,
    "results": ResultsConfig,
    "display": DisplayConfig,
    "log": LogConfig,
    "limits": LimitsConfig,
}
_TARGET_KINDS = ("folder", "azure")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, turning syntax errors into a ConfigError naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None


def _is_whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


#: The type of a field's default -> (accepts a TOML value, what to say otherwise, converter).
#: bool comes before int: a bool is an int to isinstance.
_COERCIONS: tuple[tuple[type, Callable[[Any], bool], str, Callable[[Any], Any]], ...] = (
    (bool, lambda v: isinstance(v, bool), "true or false", bool),
    (int, _is_whole, "a whole number", int),
    (float, _is_number, "a number", float),
    (str, lambda v: isinstance(v, str), "a string", str),
    (tuple, _is_strings, "a list of strings", tuple),
)


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Check a TOML value against the type of the field's default."""
    for kind, accepts, expected, convert in _COERCIONS:
        if isinstance(default, kind):
            if not accepts(value):
                raise ConfigError(
                    f"{source}: [{key}] must be {expected}, not {type(value).__name__} "
                    f"{value!r}")
            return convert(value)
    raise ConfigError(f"{source}: [{key}] has no known type")  # pragma: no cover


def _merge(
    raw: dict[str, Any], source: str, into: dict[str, dict[str, Any]], locked: set[str]
) -> None:
    for section, values in raw.items():
        if section == "policy":
            continue
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        defaults = _SECTIONS[section]()
        names = {f.name for f in dataclasses.fields(defaults)}
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if key not in names:
                raise ConfigError(f"{source}: unknown key {key!r} in [{section}]")
            if dotted in locked:
                raise ConfigError(
                    f"{source}: [{dotted}] is locked by the machine-wide configuration; "
                    "ask your IT department to change it"
                )
            into.setdefault(section, {})[key] = _coerce(
                value, getattr(defaults, key), dotted, source
            )


#: Keys whose values are secrets. A configuration file that sets one must be readable by
#: its owner only (sections holding other secrets add their keys here).
SECRET_KEYS: set[str] = {"target.connection_string", "target.sas_token"}


def _refuse_shared_secrets(raw: dict[str, Any], path: Path) -> None:
    """A secret in a file other users can read is no secret: refuse, with the fix."""
    from agent.paths import world_or_group_access

    held = sorted(k for k in SECRET_KEYS
                  if isinstance(raw.get(k.partition(".")[0]), dict)
                  and raw[k.partition(".")[0]].get(k.partition(".")[2]))
    if not held:
        return
    try:
        shared = world_or_group_access(path)
    except OSError:
        return
    if shared:
        raise ConfigError(
            f"{path}: [{held[0]}] is a secret but the file is open to other users (mode "
            f"{path.stat().st_mode & 0o777:04o}); run `chmod 600 {path}`, or move the secret "
            "to a file named by [target] secret_file")


def _policy_locks(raw: dict[str, Any], source: str) -> set[str]:
    policy = raw.get("policy", {})
    if not isinstance(policy, dict) or set(policy) - {"locked"}:
        raise ConfigError(f"{source}: [policy] may only hold 'locked'")
    locked = policy.get("locked", [])
    if not isinstance(locked, list) or not all(isinstance(k, str) for k in locked):
        raise ConfigError(f"{source}: [policy.locked] must be a list of 'section.key' strings")
    return set(locked)


def _validate_send(send: SendConfig, src: str) -> None:
    for key in ("exclude_descriptions", "include_descriptions"):
        try:
            re.compile(getattr(send, key))
        except re.error as exc:
            raise ConfigError(f"{src}: [send.{key}] is not a valid regular expression "
                              f"({exc})") from None


def _validate(cfg: Config) -> None:
    src = cfg.sources[-1] if cfg.sources else "configuration"
    if cfg.target.kind not in _TARGET_KINDS:
        raise ConfigError(
            f"{src}: [target.kind] must be one of {', '.join(_TARGET_KINDS)}, "
            f"not {cfg.target.kind!r}"
        )
    if cfg.pixels.on_identifier not in ("redact", "quarantine"):
        raise ConfigError(f"{src}: [pixels.on_identifier] must be \"redact\" or "
                          f"\"quarantine\", not {cfg.pixels.on_identifier!r}")
    if cfg.log.level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"{src}: [log.level] must be one of {', '.join(_LOG_LEVELS)}")
    positive = {
        "watch.stable_seconds": cfg.watch.stable_seconds,
        "watch.rescan_seconds": cfg.watch.rescan_seconds,
        "watch.max_wait_seconds": cfg.watch.max_wait_seconds,
        "watch.attention_seconds": cfg.watch.attention_seconds,
        "target.concurrency": cfg.target.concurrency,
        "target.block_size_mb": cfg.target.block_size_mb,
        "deid.max_date_shift_days": cfg.deid.max_date_shift_days,
        "limits.max_file_mb": cfg.limits.max_file_mb,
        "limits.max_series_mb": cfg.limits.max_series_mb,
        "limits.max_crashes": cfg.limits.max_crashes,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{src}: [{key}] must be greater than 0, not {value}")
    _validate_deid(cfg.deid, src)
    if cfg.pipeline.workers < 0:
        raise ConfigError(f"{src}: [pipeline.workers] must be 0 (one per core) or more")
    if cfg.target.max_mbps < 0:
        raise ConfigError(f"{src}: [target.max_mbps] must be 0 (no cap) or more")
    _validate_dicom(cfg.dicom, src)
    _validate_send(cfg.send, src)
    name = cfg.site.name
    if not name or not all(c.isalnum() or c in "-_" for c in name) or len(name) > 32:
        raise ConfigError(
            f"{src}: [site.name] must be 1-32 letters, digits, '-' or '_', not {name!r}"
        )
    _validate_results(cfg, src)


def _validate_results(cfg: Config, src: str) -> None:
    r = cfg.results
    if r.pacs:
        ae, _, address = r.pacs.partition("@")
        host, _, port = address.rpartition(":")
        if not (1 <= len(ae) <= 16 and host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"{src}: [results.pacs] must look like AE@host:port, not "
                              f"{r.pacs!r}")
    for key, value in (("results.poll_seconds", r.poll_seconds),
                       ("results.max_poll_seconds", r.max_poll_seconds),
                       ("results.timeout_minutes", r.timeout_minutes)):
        if value <= 0:
            raise ConfigError(f"{src}: [{key}] must be greater than 0, not {value}")
    if r.relink_retention_days < 0:
        raise ConfigError(f"{src}: [results.relink_retention_days] must be 0 (keep) or more")
    if not r.enabled:
        return
    if cfg.target.kind != "azure":
        raise ConfigError(f"{src}: [results] enabled needs [target] kind = \"azure\": the "
                          "cloud worker reads deliveries from and writes results to Azure "
                          "Blob Storage")
    if not r.folder and not r.pacs:
        raise ConfigError(f"{src}: [results] enabled needs a folder or a pacs to deliver "
                          "the re-identified results to")


def _validate_dicom(dicom: DicomConfig, src: str) -> None:
    """[dicom]: AE titles as DICOM allows them, ports, networks, TLS files that go together."""
    import ipaddress

    from agent.dicomnode.remote import valid_ae_title as ae_ok

    if not ae_ok(dicom.ae_title):
        raise ConfigError(f"{src}: [dicom.ae_title] must be 1-16 ASCII characters without "
                          f"backslash, not {dicom.ae_title!r}")
    for title in dicom.allowed_callers:
        if not ae_ok(title):
            raise ConfigError(f"{src}: [dicom.allowed_callers] {title!r} is not an AE title "
                              "(1-16 ASCII characters without backslash)")
    for net in dicom.allowed_addresses:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{src}: [dicom.allowed_addresses] {net!r} is not an IP "
                              "address or network (e.g. 10.1.2.3 or 10.1.2.0/24)") from None
    _validate_dicom_numbers(dicom, src)


def _validate_dicom_numbers(dicom: DicomConfig, src: str) -> None:
    if not 0 <= dicom.port <= 65535:
        raise ConfigError(f"{src}: [dicom.port] must be between 0 and 65535, not {dicom.port}")
    for key, value in (("max_associations", dicom.max_associations),
                       ("timeout_seconds", dicom.timeout_seconds),
                       ("send_attempts", dicom.send_attempts)):
        if value <= 0:
            raise ConfigError(f"{src}: [dicom.{key}] must be greater than 0, not {value}")
    if dicom.stable_seconds < 0:
        raise ConfigError(f"{src}: [dicom.stable_seconds] must be 0 ([watch] stable_seconds) "
                          "or more")
    if bool(dicom.tls_certificate) != bool(dicom.tls_key):
        raise ConfigError(f"{src}: [dicom.tls_certificate] and [dicom.tls_key] go together: "
                          "set both to turn DICOM TLS on, or neither")


def _validate_deid(deid: DeidConfig, src: str) -> None:
    if deid.age_cap_years < 0:
        raise ConfigError(f"{src}: [deid.age_cap_years] must be 0 (no cap) or more")
    for name in deid.vocabulary_files:
        if not Path(name).expanduser().is_file():
            raise ConfigError(
                f"{src}: [deid.vocabulary_files] names {name!r}, which is not a readable file"
            )


def load_config(
    user_file: Path | None = None,
    *,
    machine_file: Path | None = None,
    paths: AgentPaths | None = None,
) -> Config:
    """Read the machine-wide file (if present), then ``user_file`` (if given and present).

    Missing files are simply skipped (every key has a default); a file named explicitly on
    the command line must exist, which the caller checks.
    """
    paths = paths or default_paths()
    machine_file = machine_file if machine_file is not None else paths.machine_config
    sections: dict[str, dict[str, Any]] = {}
    sources: list[str] = []
    locked: set[str] = set()
    if machine_file.is_file():
        raw = read_toml(machine_file)
        _refuse_shared_secrets(raw, machine_file)
        locked = _policy_locks(raw, str(machine_file))
        _merge(raw, str(machine_file), sections, set())
        sources.append(str(machine_file))
    if user_file is not None and user_file.is_file():
        raw = read_toml(user_file)
        _refuse_shared_secrets(raw, user_file)
        if "policy" in raw:
            raise ConfigError(f"{user_file}: [policy] belongs in the machine-wide configuration")
        _merge(raw, str(user_file), sections, locked)
        sources.append(str(user_file))
    built = {name: cls(**sections.get(name, {})) for name, cls in _SECTIONS.items()}
    cfg = Config(**built, paths=paths, sources=tuple(sources))
    _validate(cfg)
    return cfg


def replace(cfg: Config, **sections: Any) -> Config:
    """A copy of ``cfg`` with whole sections, or ``section_key=value`` pairs, replaced.

    ``replace(cfg, target_path="/out", deface_enabled=False)`` is how the CLI and tests
    derive variants without writing TOML.
    """
    updates: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for name, value in sections.items():
        if name in _SECTIONS or name in ("paths", "sources"):
            direct[name] = value
            continue
        section, _, key = name.partition("_")
        if section not in _SECTIONS:
            raise TypeError(f"unknown config section in {name!r}")
        updates.setdefault(section, {})[key] = value
    for section, values in updates.items():
        direct[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **direct)


DEFAULT_CONFIG_TEXT = """\
# Clinic2Cloud configuration. Every key has a default; see README.md for all of them.

[watch]
# The folder your viewer exports to. Series are picked up when no file changed for
# stable_seconds and every file is complete.
folder = "{export}"
stable_seconds = 30

[target]
# "folder" delivers into a local folder (no cloud account needed); "azure" uploads to
# Azure Blob Storage (set container and connection_string, or account_url + sas_token).
kind = "folder"
path = "{outbox}"

[deface]
enabled = true
"""


def write_default_config(path: Path, export: Path, outbox: Path) -> None:
    """Create a starter config file (atomically) pointing at ``export`` and ``outbox``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = DEFAULT_CONFIG_TEXT.format(
        export=str(export).replace("\\", "/"), outbox=str(outbox).replace("\\", "/")
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
