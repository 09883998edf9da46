"""Run the site's processing step: input folder in, output folder out, exit code.

The contract, the same for a command and a container image:

* the verified delivery is the **input folder** (read it, never write it);
* the step writes its results into the **output folder** (empty at start): DICOM objects
  (SEG, SR, secondary captures ...) and any other files; sub-folders are kept;
* **exit code 0** means success; anything else, a timeout (``[worker]
  step_timeout_minutes``) or an empty output folder is a failed attempt.

``step = "some-command --flag {input} {output}"`` runs a local command (``{input}`` and
``{output}`` are replaced; without them the two folders are appended; they are also in the
environment as ``C2C_INPUT`` / ``C2C_OUTPUT``). ``step = "image:registry/org/step:tag"``
runs that container image with the container runtime (docker or podman), the delivery
mounted read-only at ``/input``, ``/output`` writable, no network. In Azure Container Apps,
where a job cannot start containers itself, the step's image is the job's image with the
worker installed in it (docs/cloud.md).

The step's own output (stdout and stderr) goes to ``step.log`` beside the folders and
into the worker's log, never into the results: it is the step's business what it prints.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from clinic2cloud_worker.errors import StepFailed, WorkerConfigError

log = logging.getLogger(__name__)

IMAGE_PREFIX = "image:"


@dataclass(frozen=True)
class StepRun:
    exit_code: int
    seconds: float


def command_for(step: str, input_dir: Path, output_dir: Path, runtime: str = "docker"
                ) -> list[str]:
    """The argument vector that runs ``step`` on the two folders."""
    if step.startswith(IMAGE_PREFIX):
        image = step[len(IMAGE_PREFIX):].strip()
        if not image or any(c.isspace() for c in image):
            raise WorkerConfigError("[worker.step] image: must name one container image")
        return [runtime, "run", "--rm", "--network", "none", "--read-only",
                "--tmpfs", "/tmp", "-v", f"{input_dir}:/input:ro", "-v",
                f"{output_dir}:/output", "-e", "C2C_INPUT=/input", "-e", "C2C_OUTPUT=/output",
                image, "/input", "/output"]
    try:
        argv = shlex.split(step)
    except ValueError:
        raise WorkerConfigError("[worker.step] is not a valid command line") from None
    if not argv:
        raise WorkerConfigError("[worker.step] is empty")
    if not any("{input}" in a or "{output}" in a for a in argv):
        argv += ["{input}", "{output}"]
    return [a.replace("{input}", str(input_dir)).replace("{output}", str(output_dir))
            for a in argv]


def run_step(step: str, input_dir: Path, output_dir: Path, *, timeout: float,
             runtime: str = "docker", log_file: Path | None = None) -> StepRun:
    """Run the step; raise :class:`StepFailed` unless it exited 0 and wrote something."""
    output_dir.mkdir(parents=True, exist_ok=True)
    argv = command_for(step, input_dir, output_dir, runtime)
    env = {**os.environ, "C2C_INPUT": str(input_dir), "C2C_OUTPUT": str(output_dir)}
    log_file = log_file or output_dir.parent / "step.log"
    started = time.monotonic()
    with open(log_file, "wb") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        except OSError as exc:
            raise StepFailed(f"the processing step could not be started ({exc.strerror}): "
                             f"check [worker] step", code="step-failed") from None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise StepFailed(f"the processing step ran longer than {timeout / 60:.1f} minutes "
                             "and was stopped", code="step-timeout") from None
        except BaseException:
            _kill(proc)
            raise
    seconds = time.monotonic() - started
    tail = log_file.read_bytes()[-2000:].decode("utf-8", "replace")
    if tail.strip():
        log.info("step output (last lines):\n%s", tail)
    if code != 0:
        raise StepFailed(f"the processing step exited with code {code}", code="step-failed",
                         exit_code=code)
    if not any(p.is_file() for p in output_dir.rglob("*")):
        raise StepFailed("the processing step exited 0 but wrote no results",
                         code="step-no-output", exit_code=0)
    return StepRun(exit_code=code, seconds=seconds)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End the step and everything it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
