"""The embedded default target: a local (or mounted) outbox folder.

A series is written into a hidden temporary folder beside its destination - files first,
``manifest.json`` last, each fsynced - and the folder is renamed into place in one step, so
a reader never sees a series without its manifest or a manifest without its files.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from agent.errors import ConfigError, TargetUnavailable
from agent.sync.base import MANIFEST_NAME, Delivery, Receipt
from agent.sync.manifest import dumps, same_files, verify_folder, with_version


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_synced(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


class FolderTarget:
    """Delivers series into ``root/<site>/<patient>/<study>/<series>[.vN]/``."""

    def __init__(self, root: str | Path) -> None:
        if not str(root):
            raise ConfigError(
                '[target.path] is empty: name the outbox folder for kind = "folder"')
        self.root = Path(root).expanduser()
        self.description = f"folder {self.root}"

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
            final.parent.mkdir(parents=True, exist_ok=True)
            # A delivery cut short by a crash or kill -9 left its partial copy: ours to remove.
            for stale in final.parent.glob(f".{final.name}.*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
            tmp.mkdir()
            sent = 0
            try:
                for f in delivery.files:
                    dst = tmp / f.path
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _copy_synced(f.local, dst)
                    sent += f.size
                manifest = tmp / MANIFEST_NAME
                with open(manifest, "wb") as fh:
                    fh.write(dumps(delivery.manifest))
                    fh.flush()
                    os.fsync(fh.fileno())
                _fsync_dir(tmp)
                problems = verify_folder(tmp)
                if problems:
                    raise TargetUnavailable(
                        f"the copy in the outbox does not match its manifest ({problems[0]}); "
                        "will retry"
                    )
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
