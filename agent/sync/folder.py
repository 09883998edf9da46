"""The embedded default target: a local (or mounted) outbox folder.

A series is written into a hidden temporary folder beside its destination - files first,
then made durable together (:func:`agent.sync.place.make_durable`), then ``manifest.json``,
fsynced - and the folder is renamed into place in one step, so a reader never sees a series
without its manifest or a manifest without its files, even after a power cut.

Files are hard-linked from the work area when the outbox shares its filesystem and the
delivery says they never change again (``Delivery.linkable``), reflinked where the
filesystem can, and copied otherwise, each copy hashed on the way: every file is checked
against the manifest's SHA-256 without being read a second time.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from agent.errors import ConfigError, TargetUnavailable
from agent.sync.base import MANIFEST_NAME, Delivery, DeliveryFile, Receipt
from agent.sync.manifest import dumps, same_files, sha256_file, verify_folder, with_version
from agent.sync.place import fsync_dir, make_durable, place, same_file

#: The name other modules (the DICOM node's intake) import.
_fsync_dir = fsync_dir


def _put(f: DeliveryFile, dst: Path, linkable: bool) -> None:
    """One file into the delivery folder, checked against its manifest entry: a link must
    be the very file that was hashed, a copy's bytes hash as the manifest says."""
    placed = place(f.local, dst, linkable=linkable)
    if placed.size != f.size:
        problem = "its size changed"
    elif placed.how == "link" and same_file(f.local, dst):
        return
    elif placed.how == "copy" and placed.sha256 == f.sha256:
        return
    elif placed.how == "reflink" and sha256_file(dst) == f.sha256:
        return
    else:
        problem = "its content changed"
    raise TargetUnavailable(f"a file of the series does not match its manifest in the outbox "
                            f"({f.path}: {problem}); will retry")


def _open_new(path: Path, mode: int) -> int:
    """Create ``path`` with exactly ``mode`` (fchmod: the umask does not decide)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                 mode)
    if os.name == "posix":
        os.fchmod(fd, mode)
    return fd


def _make_dirs(path: Path, mode: int) -> None:
    """Create ``path`` and its missing parents with exactly ``mode``; existing folders
    (the outbox itself, which its owner set up) are left as they are."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue
        if os.name == "posix":
            os.chmod(folder, mode)


class FolderTarget:
    """Delivers series into ``root/<site>/<patient>/<study>/<series>[.vN]/``.

    What it creates is owner-only (folders 0700, files 0600), or readable by the outbox's
    group (0750 / 0640) with ``group_readable`` - for an uploader running under a service
    account of that group - whatever the process's umask.
    """

    def __init__(self, root: str | Path, *, group_readable: bool = False) -> None:
        if not str(root):
            raise ConfigError(
                '[target.path] is empty: name the outbox folder for kind = "folder"')
        self.root = Path(root).expanduser()
        self.description = f"folder {self.root}"
        self.dir_mode = 0o750 if group_readable else 0o700
        self.file_mode = 0o640 if group_readable else 0o600

    def check(self) -> list[str]:
        problems = []
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".clinic2cloud-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            problems.append(
                f"The outbox folder {self.root} is not writable ({exc.strerror}): "
                "create it or give this user write access."
            )
        return problems

    def deliver(self, delivery: Delivery) -> Receipt:
        final = self.root / delivery.location
        try:
            if final.exists():
                return self._existing(final, delivery)
            _make_dirs(final.parent, self.dir_mode)
            # A delivery cut short by a crash or kill -9 left its partial copy: ours to remove.
            for stale in final.parent.glob(f".{final.name}.*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
            _make_dirs(tmp, self.dir_mode)
            sent = 0
            try:
                placed = []
                for f in delivery.files:
                    dst = tmp / f.path
                    _make_dirs(dst.parent, self.dir_mode)
                    _put(f, dst, delivery.linkable)
                    if os.name == "posix":  # a link shares the work file's private inode
                        os.chmod(dst, self.file_mode)
                    placed.append(dst)
                    sent += f.size
                # Every file on stable storage before the manifest exists (one flush).
                make_durable(tmp, placed)
                manifest = tmp / MANIFEST_NAME
                with os.fdopen(_open_new(manifest, self.file_mode), "wb") as fh:
                    fh.write(dumps(delivery.manifest))
                    fh.flush()
                    os.fsync(fh.fileno())
                _fsync_dir(tmp)
                os.rename(tmp, final)
                _fsync_dir(final.parent)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        except OSError as exc:
            if final.exists():  # lost a race with ourselves after a restart: check content
                return self._existing(final, delivery)
            raise TargetUnavailable(
                f"cannot write to the outbox {self.root} ({exc.strerror}); "
                "the series stays queued and is retried"
            ) from None
        return Receipt(location=delivery.location, bytes_sent=sent)

    def _existing(self, final: Path, delivery: Delivery) -> Receipt:
        try:
            manifest = json.loads((final / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
        if same_files(manifest, delivery.files) and not verify_folder(final):
            return Receipt(location=delivery.location, already_present=True)
        # Something else holds this version's name: never overwrite, take the next version.
        from dataclasses import replace

        return self.deliver(replace(delivery, version=delivery.version + 1,
                                    manifest=with_version(delivery.manifest,
                                                          delivery.version + 1)))

    def close(self) -> None:
        pass
