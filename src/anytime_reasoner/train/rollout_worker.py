"""A rollout worker process: samples the training rollouts of the steps it is asked for, with the
policy versions it is sent (``trainer.rollout_placement=process``; the trainer side is
``train.async_rollouts``).

It builds the rollout side of the run from the run's config (``train.components``: the base
model, the question source, codec, verifier and engine) and a :class:`~anytime_reasoner.train.sampler.Sampler`
over them, exactly as the trainer's own, so a step's rollouts are the same function of
(run seed, step, policy weights) in either place. Then it serves messages in the order they came:

- ``("weights", version, how)``: load policy ``version`` into the model (or the engine, for one
  with its own weights: vLLM). ``how`` is ``{"file": path}`` (a safetensors file) or
  ``{"broadcast": [(name, shape, dtype), …]}`` (each tensor arrives by a broadcast from the
  trainer, rank 0 of a 2-member gloo/nccl group, :class:`WeightChannel`);
- ``("sample", step)``: sample step ``step`` with the loaded version and send back
  ``("sampled", step, Sampled)``;
- ``("stop",)``.

Because the trainer sends the weights of version v before the steps that v samples, and messages
are served in order, the version behind every step is fixed by the trainer, not by timing: runs
are deterministic. An error is sent back as ``("error", one line)``; the worker exits within half a
second of the trainer's process being gone, whatever it is doing, from its first line on
(``train.worker_process``: the spawn target starts that watch before this module is imported).
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import time
import traceback
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from anytime_reasoner.config import TrainConfig
from anytime_reasoner.errors import UserError
from anytime_reasoner.train.components import load_base, rollout_parts
from anytime_reasoner.train.logprobs import PolicyScorer
from anytime_reasoner.train.runtime import Runtime, check_train_dtype
from anytime_reasoner.train.sampler import Sampler
from anytime_reasoner.train.weight_sync import WeightLoadingEngine
from anytime_reasoner.train.worker_process import POLL_SECONDS, WorkerSpec

log = logging.getLogger(__name__)


class WeightChannel:
    """A 2-member process group between the trainer (rank 0) and one worker (rank 1), outside any
    ``torch.distributed`` default group (``torchrun``'s stays untouched), over a TCPStore on the
    trainer's machine. The trainer broadcasts each tensor; the worker receives into empty ones."""

    def __init__(self, store: Any, rank: int, backend: str, device: torch.device) -> None:
        timeout = datetime.timedelta(minutes=30)
        if backend == "nccl":
            self.group: Any = dist.ProcessGroupNCCL(store, rank, 2, dist.ProcessGroupNCCL.Options())
        else:
            self.group = dist.ProcessGroupGloo(store, rank, 2, timeout)
        self.device = device

    @staticmethod
    def host() -> tuple[Any, int]:
        """The trainer's store on a free port → (store, port); :meth:`__init__` with rank 0 joins it."""
        store = dist.TCPStore("127.0.0.1", 0, 2, True, timeout=datetime.timedelta(minutes=30), wait_for_workers=False)
        return store, store.port

    def send(self, tensors: dict[str, torch.Tensor]) -> None:
        for tensor in tensors.values():
            self.group.broadcast(tensor.to(self.device), 0).wait()

    def receive(self, layout: list[tuple[str, list[int], str]]) -> dict[str, torch.Tensor]:
        out = {}
        for name, shape, dtype in layout:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            self.group.broadcast(tensor, 0).wait()
            out[name] = tensor
        return out


def build_sampler(cfg: TrainConfig, device: str) -> Sampler:
    """The worker's sampler: the run's base model, source and rollout parts on ``device``."""
    runtime = Runtime(device=torch.device(device), compute_dtype=check_train_dtype(cfg.model.dtype))
    base = load_base(cfg, runtime)
    parts = rollout_parts(cfg, base.model, base.path, base.tokenizer, runtime)
    return Sampler(
        cfg, base.model, base.tokenizer, parts.engine, parts.codec, parts.verifier, base.source, runtime, PolicyScorer(base.model)
    )


def load_policy(sampler: Sampler, tensors: dict[str, torch.Tensor]) -> None:
    """Policy weights (Hugging Face names, merged under LoRA) into the engine or the model."""
    if isinstance(sampler.engine, WeightLoadingEngine):
        sampler.engine.load_weights(iter(tensors.items()))
    else:
        sampler.model.load_state_dict(tensors, strict=True)


def own_gpu(device: str, env: dict[str, str]) -> str:
    """``cuda:N`` → ``cuda`` with ``CUDA_VISIBLE_DEVICES`` narrowed to that one GPU in ``env`` (before
    CUDA starts in this process), so an engine that takes every visible GPU (vLLM) takes only it."""
    if not device.startswith("cuda:"):
        return device
    index = int(device.split(":", 1)[1])
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    return "cuda"


def main(spec: WorkerSpec, requests: Any, results: Any) -> None:
    """The worker process's entry point, called by :func:`~anytime_reasoner.train.worker_process.run_watched`
    (the spawn target), which already watches the trainer."""
    torch.set_num_threads(spec.threads)
    try:
        device = own_gpu(spec.device, os.environ)  # type: ignore[arg-type]
        cfg = TrainConfig.model_validate(spec.config)
        channel = None
        if spec.store_port is not None:  # first: the trainer waits for the group before it builds on
            store = dist.TCPStore("127.0.0.1", spec.store_port, 2, False, timeout=datetime.timedelta(minutes=30))
            channel = WeightChannel(store, 1, spec.backend, torch.device(device if spec.backend == "nccl" else "cpu"))
        sampler = build_sampler(cfg, device)
        results.put(("ready", os.getpid()))
        serve(sampler, channel, requests, results)
    except UserError as err:
        results.put(("error", str(err)))
    except Exception as err:  # noqa: BLE001 - sent to the trainer, which stops with it
        results.put(("error", f"rollout worker: {type(err).__name__}: {err}\n{traceback.format_exc()}"))


def serve(sampler: Sampler, channel: WeightChannel | None, requests: Any, results: Any) -> None:
    """Serve ``requests`` in order until ``("stop",)``. Each sampled step
    reports the worker's seconds since its last one: ``worker_idle_seconds`` (waiting for a
    message), ``worker_load_seconds`` (receiving and loading weights), ``worker_sample_seconds``."""
    version: int | None = None
    clock = {"idle": 0.0, "load": 0.0}
    try:
        while True:
            t0 = time.perf_counter()
            try:
                message = requests.get(timeout=POLL_SECONDS)
            except queue.Empty:  # (a trainer that died ends this process: exit_with)
                clock["idle"] += time.perf_counter() - t0
                continue
            clock["idle"] += time.perf_counter() - t0
            if message[0] == "stop":
                return
            t1 = time.perf_counter()
            if message[0] == "weights":
                _, version, how = message
                load_policy(sampler, _receive(how, channel))
                clock["load"] += time.perf_counter() - t1
                continue
            step = message[1]
            if version is None:
                raise RuntimeError(f"step {step} asked for before any policy was sent")
            sampled = sampler.sample(step, sampler.cfg.plan_at(step))
            sampled.version = version
            sampled.metrics.update(
                worker_sample_seconds=time.perf_counter() - t1,
                worker_idle_seconds=clock["idle"],
                worker_load_seconds=clock["load"],
            )
            clock = {"idle": 0.0, "load": 0.0}
            results.put(("sampled", step, sampled))
    finally:
        sampler.close()


def _receive(how: dict[str, Any], channel: WeightChannel | None) -> dict[str, torch.Tensor]:
    """The tensors of a ``weights`` message: read from its file, or received by broadcast."""
    if "file" in how:
        return load_file(how["file"])
    if channel is None:
        raise RuntimeError("weights sent by broadcast to a worker without a weight channel")
    return channel.receive(how["broadcast"])
