"""How a rollout worker process starts: what it is started with (:class:`WorkerSpec`) and the watch
that ends it with its trainer, set up before anything heavy is imported.

A spawned worker unpickles its target and arguments first, which imports their modules; the worker
proper (``train.rollout_worker``: torch, transformers, the engine) takes seconds to import, ~9 s on a
loaded 2-core machine. A trainer killed in that window (SIGKILL: nothing of it runs again) would leave
the worker importing, loading a model and serving a queue nobody reads until its own watch started.
So the spawn target is :func:`run_watched` here (the standard library only), which starts the watch
and only then imports the worker by name: the worker is gone within :data:`POLL_SECONDS` of its
trainer, from its first line on.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 0.5  # how often the worker checks that the trainer is alive (and an idle one wakes)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (picklable without importing the worker)."""

    config: dict[str, Any]  # the run's config, dumped
    device: str  # where it samples: "cpu", "cuda", "cuda:1"
    threads: int  # torch threads (CPU: the worker's share of the cores)
    parent_pid: int  # the trainer's process: the worker exits when it is gone
    store_port: int | None = None  # weight_transfer=broadcast: the trainer's TCPStore on 127.0.0.1
    backend: str = "gloo"  # the broadcast group's backend (nccl between GPUs)


def exit_with(parent_pid: int) -> threading.Thread:
    """A daemon thread that ends this process when ``parent_pid`` is no longer its parent (the
    trainer died, even by SIGKILL): checked every ``POLL_SECONDS``, while the worker imports, loads a
    model or samples a step as well as while it waits."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        os._exit(0)  # nothing to save: the trainer's checkpoints are the run's state

    watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    watcher.start()
    return watcher


def run_watched(target: str, spec: WorkerSpec, *args: Any) -> None:
    """The spawn target: watch ``spec.parent_pid``, then import ``target`` (``"module:function"``)
    and call it with ``(spec, *args)``."""
    exit_with(spec.parent_pid)
    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(spec, *args)
