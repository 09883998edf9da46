"""The ``clinic2cloud`` command. Every subcommand calls the engine through its public API
(:class:`agent.main.Agent`, :func:`agent.oneshot.process_folder`, :class:`agent.ledger.Ledger`)
and turns our errors into a one-line message and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.config import Config, load_config, replace, write_default_config
from agent.errors import Clinic2CloudError, ConfigError, FatalError
from agent.paths import default_paths

if TYPE_CHECKING:
    from agent.control import RemoteAgent
    from agent.ledger import Ledger

log = logging.getLogger("clinic2cloud")


def _print(text: str = "") -> None:
    if sys.stdout is not None:  # windowed (frozen) builds have no stdout
        print(text, flush=True)


def _error(text: str) -> None:
    if sys.stderr is not None:
        print(f"clinic2cloud: {text}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace, *, create_default: bool = False) -> Config:
    paths = default_paths()
    if args.config:
        path = Path(args.config).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: the configuration file does not exist")
        return load_config(path, paths=paths)
    if create_default and not paths.user_config.exists() and not paths.machine_config.exists():
        home = Path.home() / "Clinic2Cloud"
        export, outbox = home / "Export", home / "Outbox"
        export.mkdir(parents=True, exist_ok=True)
        outbox.mkdir(parents=True, exist_ok=True)
        write_default_config(paths.user_config, export, outbox)
        _print(f"Created a default configuration: {paths.user_config}")
        _print(f"  Export your series into: {export}")
        _print(f"  De-identified series appear in: {outbox}")
    return load_config(paths.user_config, paths=paths)


def _check_run_config(cfg: Config) -> None:
    src = cfg.sources[-1] if cfg.sources else "the configuration"
    if not cfg.watch.folder and not cfg.dicom.listen:
        raise ConfigError(f"{src}: [watch.folder] is not set: name the folder your viewer "
                          "exports to")
    folder = Path(cfg.watch.folder).expanduser()
    if cfg.watch.folder and not folder.is_dir():
        raise ConfigError(f"{src}: [watch.folder] {folder} does not exist or is not a folder")
    if cfg.target.kind == "folder":
        from agent.sync.folder import FolderTarget

        problems = FolderTarget(cfg.target.path).check()
        if problems:
            raise ConfigError(f"{src}: [target.path] {problems[0]}")


# -- commands ------------------------------------------------------------------------------

def _exit_without_collecting() -> None:
    """At interpreter exit, leave the heap to the operating system: the collections of
    the interpreter's shutdown took 0.3-0.6 s after ``process`` had printed its summary
    (2,000 files), 0.1 s with the heap frozen (everything is written and closed by then;
    no finalizer of ours waits for a collection)."""
    import atexit
    import gc

    atexit.register(gc.freeze)


def cmd_run(args: argparse.Namespace) -> int:
    _exit_without_collecting()
    from agent.headless import run_headless
    from agent.logs import setup_logging
    from agent.main import Agent

    cfg = _load(args, create_default=True)
    _check_run_config(cfg)
    from agent.checks import run_startup_checks

    run_startup_checks(cfg)
    setup_logging(cfg.paths.log_dir, cfg.log.level)
    from agent.headless import install_signal_handlers

    # SIGTERM while the agent is still being built (the ledger opened, the stages loading:
    # seconds on a busy machine) is a stop request too, not a death by signal.
    early = threading.Event()
    restore = install_signal_handlers(early.set)
    try:
        agent = Agent(cfg)
    finally:
        restore()
    if early.is_set():
        agent.stop()
        return 0
    if not args.headless:
        from agent.tray import run_tray

        return run_tray(agent)

    def announce() -> None:
        where = cfg.watch.folder or "no export folder, DICOM only"
        _print(f"Clinic2Cloud {__version__} watching {where} "
               f"(target: {agent.target.description}); stop with Ctrl+C or "
               "`clinic2cloud quit`")
        node = agent.dicom_status()
        if node is not None:
            _print(node.summary())

    return run_headless(agent, on_started=announce)


def _warm_pool_early(cfg: Config, src: Path) -> None:
    """Start the process pool now, for an export large enough to use it (counting stops
    at the threshold: a few directory listings): forked from this process, still its only
    thread (:func:`agent.procpool.start_forked`: it imports the stages first, as this
    process must anyway), where it can; else a fork server, which imports them while this
    process imports them too and reads the export. Only the command forks: a library
    caller of process_folder (a test) may hold state its workers must not inherit."""
    if cfg.worker_count < 2:
        return
    from agent import procpool

    count = 0
    for _folder, _subfolders, files in os.walk(src):
        count += len(files)
        if count >= procpool.WORTH_POOLING:
            if not procpool.start_forked():
                procpool.warm_in_background()
            return


def cmd_process(args: argparse.Namespace) -> int:
    _exit_without_collecting()
    cfg = _load(args)
    src = Path(args.src).expanduser()
    if not src.is_dir():
        raise ConfigError(f"{src}: the source folder does not exist")
    _warm_pool_early(cfg, src)
    from agent.logs import setup_logging
    from agent.oneshot import process_folder

    out = Path(args.out).expanduser()
    cfg = replace(cfg, target_kind="folder", target_path=str(out))
    from agent.checks import run_startup_checks

    run_startup_checks(cfg, skip=("export folder", "ledger"))
    setup_logging(cfg.paths.log_dir, cfg.log.level, console=not args.json)
    summary = process_folder(cfg, src, out)
    if args.json:
        _print(json.dumps(summary.as_dict(), indent=2))
    else:
        for o in summary.series:
            where = o.location if o.state == "delivered" else o.reason
            _print(f"series {o.series_id}: {o.state} {o.modality} {o.file_count} files  {where}")
        _print(f"{summary.delivered} delivered, {summary.withheld} withheld, "
               f"{summary.quarantined} quarantined, "
               f"{summary.ignored_files} non-DICOM files ignored, {summary.seconds:.1f} s")
        if not summary.series:
            _print("no DICOM series found")
    return 0 if summary.ok else 1


def cmd_deface(args: argparse.Namespace) -> int:
    from agent.deface import deface_path
    cfg = _load(args)
    if Path(args.input).is_dir():
        # A DICOM series keeps every header element: defacing alone would write the
        # patient's name, IDs and dates out again next to a new face.
        if not args.keep_identity:
            _error("deface writes DICOM headers unchanged (names, IDs, dates): use "
                   "'clinic2cloud process IN --out DIR' to de-identify and deface, or add "
                   "--keep-identity for a defaced copy that still identifies the patient")
            return 2
        _error("warning: --keep-identity: the defaced DICOM still carries the patient's "
               "identity in its headers; do not share it")
    report = deface_path(Path(args.input), Path(args.output),
                         render=Path(args.render) if args.render else None, cfg=cfg.deface)
    _print(json.dumps(_jsonable(report), indent=2))
    return 0


def _jsonable(obj: object) -> object:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _open_ledger(cfg: Config, path: Path | None = None, *, check: bool = True) -> Ledger:
    from agent.keys import installation_secret
    from agent.ledger import Ledger

    path = path or cfg.paths.ledger
    return Ledger(path, installation_secret(cfg.paths.installation_secret), check=check)


def cmd_status(args: argparse.Namespace) -> int:
    """What the running agent is doing (through its control endpoint), else what the
    ledger says. Exit 0 either way: "not running" is an answer, not an error."""
    from agent.control import RemoteAgent, ledger_status
    from agent.ui.report import status_document, status_lines

    cfg = _load(args)
    remote = RemoteAgent.connect(cfg)
    if remote is not None:
        status, recent = remote.status(), remote.recent(args.limit)
        source, pid = "agent", remote.pid
    elif cfg.paths.ledger.exists():
        (status, recent), source, pid = ledger_status(cfg, args.limit), "ledger", None
    else:
        if args.json:
            _print(json.dumps({"source": "none", "running": False, "recent": []}))
        else:
            _print("Clinic2Cloud is not running and has not run yet for this user.")
        return 0
    if args.json:
        _print(json.dumps(status_document(status, recent, source=source, pid=pid), indent=2))
    else:
        for line in status_lines(status, recent, source=source, pid=pid):
            _print(line)
    return 0


def _remote(args: argparse.Namespace) -> RemoteAgent:
    """The running agent, or NotRunning (exit 1 with one clear line)."""
    from agent.control import NotRunning, RemoteAgent

    remote = RemoteAgent.connect(_load(args))
    if remote is None:
        raise NotRunning()
    return remote


def cmd_pause(args: argparse.Namespace) -> int:
    from agent.ui.text import pause_words

    remote = _remote(args)
    if args.hours is not None and args.hours <= 0:
        raise ConfigError("--hours must be more than 0")
    remote.pause(None if args.hours is None else args.hours * 3600.0)
    _print(pause_words(remote.status().paused_until) or "paused")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    remote = _remote(args)
    remote.resume()
    _print("resumed: exports are taken again")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    if args.results and args.series is None:
        _error("retry --results needs the SERIES whose results to look for again")
        return 2
    remote = _remote(args)
    if args.results:
        _print(remote.retry_results(args.series))
        return 0
    said = [(args.series, remote.retry(args.series))] if args.series is not None else (
        remote.retry_all())
    for _series, message in said:
        _print(message)
    if not said:
        _print("no quarantined series to retry")
    return 0


def cmd_quit(args: argparse.Namespace) -> int:
    remote = _remote(args)
    remote.call("quit")
    if not remote.wait(15.0):
        _error("asked the agent to quit, but it is still running after 15 s")
        return 1
    _print("Clinic2Cloud stopped")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from agent.ledger import rebuild

    cfg = _load(args)
    path = Path(args.ledger).expanduser() if args.ledger else cfg.paths.ledger
    if args.action == "rebuild":
        from agent.keys import installation_secret

        if not path.exists():
            raise FatalError(f"{path}: no ledger there")
        kept, ledger = rebuild(path, installation_secret(cfg.paths.installation_secret))
        ledger.close()
        _print(f"kept the damaged ledger as {kept}; a new ledger was started at {path}. "
               "Series in the export folder are taken again at the next start.")
        return 0
    if not path.exists():
        raise FatalError(f"{path}: no ledger there")
    ledger = _open_ledger(cfg, path, check=False)
    if args.action == "verify":
        problems = ledger.verify()
        for p in problems:
            _print(f"TAMPERED: {p}")
        if problems:
            _print(f"{len(problems)} problem(s): the ledger cannot be trusted. "
                   "`clinic2cloud ledger rebuild` keeps it aside and starts a new one.")
            return 1
        _print(f"ledger intact: {len(ledger.audit_rows())} audit rows, series rows sealed, "
               f"head {ledger.head()}")
        return 0
    _print(ledger.export(args.format))
    return 0


def _ocr_checks(cfg: Config) -> tuple[list[str], list[str]]:
    try:
        from agent.pixels import check_ocr

        check_ocr(cfg.pixels.tessdata)  # burned-in text detection runs end to end
    except Clinic2CloudError as exc:
        return [], [f"text detection: {exc}"]
    return ["ok: burned-in text detection (Tesseract) runs end to end"], []


def _target_checks(cfg: Config) -> tuple[list[str], list[str]]:
    from agent.sync import open_target

    try:
        target = open_target(cfg)
        found = target.check()
        target.close()
    except Clinic2CloudError as exc:
        found = [str(exc)]
    if found:
        return [], [f"target: {p}" for p in found]
    return [f"ok: the target ({cfg.target.kind}) accepts a test file"], []


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.checks import startup_checks
    from agent.dicomnode.doctor import dicom_checks
    from agent.results.doctor import results_checks

    cfg = _load(args)
    _print(f"configuration: {', '.join(cfg.sources) or 'built-in defaults'}")
    _print(f"state: {cfg.paths.state_dir}\nlogs: {cfg.paths.log_dir}")
    problems = 0
    try:
        _check_run_config(cfg)
        _print("ok: the configuration names an export folder and a target")
    except ConfigError as exc:
        problems += 1
        _print(f"PROBLEM: {exc}")
    for check in startup_checks(cfg):
        if check.ok:
            _print(f"ok: {check.what}")
        else:
            problems += 1
            _print(f"PROBLEM: {check.name}: {check.problem}")
    for section in (_ocr_checks, _target_checks, dicom_checks, results_checks):
        lines, found = section(cfg)
        for line in lines:
            _print(line)
        for p in found:
            _print(f"PROBLEM: {p}")
        problems += len(found)
    _print("all checks passed" if not problems else f"{problems} problem(s) found")
    return 0 if not problems else 1


def cmd_lookup(args: argparse.Namespace) -> int:
    from agent.deid import pseudonym_for_patient
    from agent.keys import site_secret

    cfg = _load(args)
    key = site_secret(cfg.site.secret_file, cfg.paths.installation_secret)
    pseudonym = pseudonym_for_patient(cfg.site.name, key, args.patient_id)
    _print(f"pseudonym: {pseudonym}")
    if cfg.paths.ledger.exists():
        for r in _open_ledger(cfg).for_patient(pseudonym):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated))
            _print(f"  series {r.id} {when} {r.state} {r.modality} {r.location or r.reason}")
    return 0


# -- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinic2cloud",
        description="De-identify and deface brain MRI exports and deliver them to the cloud.")
    parser.add_argument("--version", action="version", version=f"clinic2cloud {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="configuration file (TOML)")
        return p

    p = add("run", "watch the export folder and deliver series until stopped")
    p.add_argument("--headless", action="store_true", help="no tray icon (servers, tests)")
    p.set_defaults(func=cmd_run)
    p = add("process", "run every series under SRC through the pipeline into DIR, then exit")
    p.add_argument("src")
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_process)
    p = add("deface", "deface one volume (DICOM series folder or NIfTI file)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--render", help="write a before/after face render (PNG)")
    p.add_argument("--keep-identity", action="store_true",
                   help="DICOM input: write the defaced series with its headers unchanged "
                        "(still identifying; for local use only)")
    p.set_defaults(func=cmd_deface)
    p = add("status", "what the running agent is doing (else what its ledger says)")
    p.add_argument("--limit", type=int, default=20, help="recent series shown (20)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = add("pause", "pause the running agent (new series wait; a pause survives restarts)")
    p.add_argument("--hours", type=float, help="for this many hours (default: until resumed)")
    p.set_defaults(func=cmd_pause)
    p = add("resume", "resume the running agent")
    p.set_defaults(func=cmd_resume)
    p = add("retry", "send quarantined series through again (all of them, or SERIES)")
    p.add_argument("series", nargs="?", type=int, help="the series number shown by status")
    p.add_argument("--results", action="store_true",
                   help="look for the cloud results of SERIES again (failed or timed-out "
                        "ones are sent to the cloud worker again)")
    p.set_defaults(func=cmd_retry)
    p = add("quit", "stop the running agent (work in flight resumes at the next start)")
    p.set_defaults(func=cmd_quit)
    p = add("ledger", "verify, export or rebuild the audit ledger")
    p.add_argument("action", choices=["verify", "export", "rebuild"],
                   help="rebuild: keep a damaged ledger aside and start a new one")
    p.add_argument("--format", choices=["csv", "json"], default="json")
    p.add_argument("--ledger", help="ledger file (default: this user's)")
    p.set_defaults(func=cmd_ledger)
    p = add("doctor", "check the configuration, the folders and the target end to end")
    p.set_defaults(func=cmd_doctor)
    p = add("lookup", "the pseudonym and deliveries of a patient, computed from the site key")
    p.add_argument("--patient-id", required=True)
    p.set_defaults(func=cmd_lookup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agent.paths import secure_umask

    secure_umask()  # whatever the command writes (state, logs, work) is the user's alone
    try:
        return int(args.func(args))
    except FatalError as exc:
        _error(str(exc))
        return exc.exit_code
    except Clinic2CloudError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `clinic2cloud status | head`: the reader left. Not an error; and point stdout at
        # nothing so the interpreter's final flush does not complain either.
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
