"""Child ``anytime-reasoner`` commands run side by side (``demo``, ``compare``).

Every job is the command ``python -m anytime_reasoner ARGS`` in a process of its own, with one torch
thread and its output in a log file. The processes are not started from scratch: a *host* process,
started once with ``spawn`` (a clean interpreter with none of the caller's threads), sets the child
environment, imports torch, transformers and the train and eval code (``PRELOAD``), and forks a
child for every job. A command's imports cost ~6 s on the 2-core EPYC (docs/BENCHMARKS.md), most of a
toy-scale job, and ``compare`` runs dozens of jobs. The host never runs a tensor operation, so
forking it is safe; each job is still its own process with its own exit code, as before.

The host imports the modules by name and runs the command as ``python -m`` does (``runpy``), so this
module sits below the commands it runs and imports none of them.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import runpy
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from anytime_reasoner.errors import UserError

PRELOAD = ("torch", "transformers", "anytime_reasoner.train.build", "anytime_reasoner.eval.cli")
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
COMMAND = "anytime_reasoner"  # the module every job runs, as ``python -m anytime_reasoner``


@dataclass
class Job:
    """One child ``anytime-reasoner`` command; ``after`` names jobs that must finish first."""

    name: str
    args: list[str]
    log: Path
    after: tuple[str, ...] = ()


def run_command(module: str, args: Sequence[str], log: str, host_conn: Connection) -> None:
    """In a forked child: output to ``log``, then ``python -m module ARGS`` (its exit is the child's)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the host ignores Ctrl-C; a job does not
    host_conn.close()  # the caller's end must see the host's death, not wait for every job to end
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def serve(conn: Connection, preload: Sequence[str], module: str) -> None:
    """The host: import ``preload`` once, then fork a child per ``(name, args, log)`` received and
    send back ``(name, exit code)`` when it ends; ``None`` (or the caller gone) ends every child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller stops the host and its jobs
    os.environ.update(CHILD_ENV)  # before torch is imported: one OpenMP thread per job
    for name in preload:
        importlib.import_module(name)
    fork = multiprocessing.get_context("fork")
    running: dict[int, tuple[str, BaseProcess]] = {}
    try:
        while True:
            for ready in wait([conn, *running]):
                if ready is conn:
                    try:
                        message = conn.recv()
                    except EOFError:
                        return
                    if message is None:
                        return
                    name, args, log = message
                    child: BaseProcess = fork.Process(target=run_command, args=(module, args, log, conn), name=name)
                    child.start()
                    running[child.sentinel] = (name, child)
                else:
                    assert isinstance(ready, int)  # a child's sentinel
                    name, child = running.pop(ready)
                    child.join()
                    conn.send((name, child.exitcode))
    finally:
        for _, child in running.values():
            child.terminate()
            child.join()


class JobHost:
    """The host process of :func:`serve`, seen from the caller: ``start`` a job, collect ``finished`` ones."""

    def __init__(self, preload: Sequence[str] = PRELOAD, module: str = COMMAND):
        spawn = multiprocessing.get_context("spawn")
        self._conn, host_end = spawn.Pipe()
        self._process = spawn.Process(target=serve, args=(host_end, tuple(preload), module), name="anytime-reasoner jobs")
        self._process.start()
        host_end.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        self._conn.send((job.name, list(job.args), str(job.log)))

    def finished(self, timeout: float) -> list[tuple[str, int]]:
        """``(name, exit code)`` of the jobs that ended, waiting up to ``timeout`` s for the first."""
        ended = []
        try:
            while self._conn.poll(timeout):
                ended.append(self._conn.recv())
                timeout = 0.0
        except EOFError:
            raise UserError(
                f"the job host (pid {self._process.pid}) died (exit {self._process.exitcode}); no job finished"
            ) from None
        return ended

    def close(self) -> None:
        """Stop every running job and the host."""
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def run_jobs(
    jobs: list[Job], parallel: int, progress: Callable[[set[str]], None], preload: Sequence[str] = PRELOAD
) -> dict[str, float]:
    """Run ``jobs`` respecting ``after``, at most ``parallel`` at once, forked from one host that
    imported ``preload``; fail on the first error.

    ``progress(done)`` is called about once a second with the names of the finished jobs. Returns
    each job's seconds.
    """
    pending = list(jobs)
    running: dict[str, Job] = {}
    done: set[str] = set()
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    runner = JobHost(preload)
    try:
        while pending or running:
            for job in [j for j in pending if set(j.after) <= done][: parallel - len(running)]:
                pending.remove(job)
                runner.start(job)
                started[job.name] = time.perf_counter()
                running[job.name] = job
            if not running:
                raise UserError(
                    "jobs wait for jobs that are not planned: " + ", ".join(f"{j.name} after {j.after}" for j in pending)
                )
            for name, code in runner.finished(timeout=1.0):
                job = running.pop(name)
                seconds[name] = round(time.perf_counter() - started[name], 1)
                if code != 0:
                    tail = job.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
                    raise UserError(f"{job.name} failed (exit {code}); see {job.log}: " + " | ".join(tail))
                done.add(name)
            progress(done)
    finally:
        runner.close()
    return seconds
