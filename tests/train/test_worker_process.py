"""The rollout worker's spawn target watches its trainer before it imports the worker: a trainer
killed with SIGKILL while its worker is still importing (seconds, for torch and an engine) takes
the worker with it within a poll, not after the import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINER = """
import multiprocessing, os, sys, time
from anytime_reasoner.train.worker_process import WorkerSpec, run_watched
process = multiprocessing.get_context("spawn").Process(
    target=run_watched, args=("tests.train.watched_target:main", WorkerSpec({}, "cpu", 1, os.getpid()), "hello")
)
process.start()
print(process.pid, flush=True)
process.join()
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:  # a zombie has exited
            return stat.read().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


def _start(tmp_path: Path, import_seconds: float) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "WATCHED_MARKER": str(tmp_path / "marker"), "WATCHED_IMPORT_SECONDS": str(import_seconds)}
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    return trainer, int(trainer.stdout.readline())


def test_the_worker_runs_its_target_with_the_spec_and_arguments(tmp_path):
    trainer, _ = _start(tmp_path, 0)
    assert trainer.wait(timeout=60) == 0
    assert (tmp_path / "marker.ran").read_text() == "cpu hello"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_a_trainer_killed_while_its_worker_imports_takes_the_worker_with_it(tmp_path):
    trainer, worker = _start(tmp_path, 30)  # an import of 30 s: the window is wide open
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker.importing").is_file() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "marker.importing").is_file(), "the worker never started importing its module"
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    killed = time.monotonic()
    while not _gone(worker) and time.monotonic() - killed < 20:
        time.sleep(0.02)
    waited = time.monotonic() - killed
    try:
        # the watch polls every 0.5 s; 10 s leaves room for a loaded machine and is far below the import
        assert _gone(worker) and waited < 10, f"the worker outlived its trainer by {waited:.1f} s"
        assert not (tmp_path / "marker.ran").exists()
    finally:
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)
