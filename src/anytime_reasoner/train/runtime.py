"""Where training runs: the process group, the device, and the compute precision.

One :class:`Runtime` is built per process by :func:`init_runtime` and passed explicitly to the
trainer, the update and the checkpoint code; nothing here is module-level state.

- **Processes.** ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with
  ``WORLD_SIZE > 1`` a process group is created (``nccl`` on CUDA, ``gloo`` on CPU), with a 1-D
  device mesh over it for FSDP2, and each rank uses ``cuda:LOCAL_RANK``; :func:`shutdown` frees
  both before the process exits. Without them the run is a single process and no group is created.
- **Question sharding.** A step's questions are dealt out strided: question q goes to rank
  ``q % world_size``. All G thinkings of a question stay on its rank, so the group baselines
  (GRPO, BRPO) are exact without communication, and a global mini-batch of M consecutive
  questions is the union of the ranks' local pieces of it (see ``train.update``).
- **Precision.** Parameters, gradients and optimizer state stay float32 (master weights);
  ``model.dtype`` is the *compute* dtype. Sharded runs let FSDP2 cast
  (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``, see ``train.fsdp``): every
  forward runs on bf16 copies of the weights, so the residual stream is bf16, and the gradients
  reach the float32 shards through float32. One process does the same (:attr:`Runtime.cast_dtype`,
  :func:`compute_weights`): forwards, backwards and generation run on bf16 casts of the weights,
  differentiable when training, so 1 and W processes compute the same thing. (``torch.autocast``, used before, keeps float32
  weights and casts per op: the residual stream stays float32, and log-probs differed from the
  W-process ones by ~4e-3 on the tiny model.) float16 is refused for training: without a gradient
  scaler its small gradients underflow.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from anytime_reasoner.errors import UserError
from anytime_reasoner.models.loading import resolve_device

log = logging.getLogger(__name__)
T = TypeVar("T")

TRAIN_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class Runtime:
    """One process's view of the run: rank, world size, device and compute dtype."""

    device: torch.device
    compute_dtype: torch.dtype = torch.float32
    rank: int = 0
    world_size: int = 1
    sharded: bool = False  # the policy is FSDP2-sharded (train.fsdp); init_runtime: when world_size > 1
    mesh: DeviceMesh | None = field(default=None, compare=False, repr=False)  # the 1-D mesh FSDP2 shards over

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that logs, prints and writes the full model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def cast_dtype(self) -> torch.dtype | None:
        """The dtype one process casts the float32 weights to for every forward: FSDP2's
        ``param_dtype``, so one process computes what W processes compute (bf16 weights, a bf16
        residual stream). None in float32, and when FSDP2 casts the weights itself."""
        if self.compute_dtype == torch.float32 or self.sharded:
            return None
        return self.compute_dtype

    # ------------------------------------------------------------------ sharding

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items of a global list: ``items[rank::world_size]``."""
        return list(items[self.rank :: self.world_size])

    def global_index(self, local: Any) -> Any:
        """The global position of this rank's ``local``-th item of :meth:`shard` (an int or a tensor of them)."""
        return self.rank + self.world_size * local

    # ------------------------------------------------------------------ collectives

    def all_reduce(self, values: Sequence[float], op: str = "sum") -> list[float]:
        """Reduce numbers across ranks (``sum``, ``max`` or ``min``); identity in one process."""
        if not self.distributed:
            return list(values)
        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)  # [K]
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return tensor.tolist()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
        if not self.distributed:
            return obj
        box: list[Any] = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


@contextlib.contextmanager
def compute_weights(module: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Inside: every floating parameter of ``module`` reads as a ``dtype`` cast of its float32
    value, as FSDP2's unsharded parameters do; with grad enabled the casts are differentiable, so
    gradients reach the float32 parameters (in float32). ``dtype`` None: nothing changes.

    Wrap the forward *and* the backward: activation checkpointing (the output head's chunks,
    transformers' layers) recomputes in backward and reads the module's weights again, so the
    swap must outlive the forward (``torch.func.functional_call``'s ends with the call). The casts
    sit in each module's ``_parameters`` for the body (as ``torch.nn.utils.stateless`` swaps
    them); tied weights share one cast; the parameters are put back on exit.
    """
    if dtype is None:
        yield
        return
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    casts: dict[int, torch.Tensor] = {}
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                owner._parameters[name] = casts.setdefault(id(param), param.to(dtype))  # type: ignore[assignment]
                swapped.append((owner, name, param))
    try:
        yield
    finally:
        for owner, name, param in swapped:
            owner._parameters[name] = param


def check_train_dtype(dtype: str) -> torch.dtype:
    """The compute dtype for training; float16 is refused (no gradient scaler)."""
    if dtype not in TRAIN_DTYPES:
        raise UserError(
            f"model.dtype: {dtype} is not trained here (float16 needs a gradient scaler, which this trainer "
            f"does not use); allowed: {', '.join(TRAIN_DTYPES)}"
        )
    return getattr(torch, dtype)


def init_runtime(device: str, dtype: str, env: dict[str, str] | None = None) -> Runtime:
    """The runtime of this process: ``torchrun``'s environment (``env``, default ``os.environ``)
    decides the rank and world size; ``device`` is ``model.device`` (``auto``, ``cpu``, ``cuda``)."""
    env = dict(os.environ) if env is None else env
    compute_dtype = check_train_dtype(dtype)
    kind = resolve_device(device)
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Runtime(device=torch.device(kind), compute_dtype=compute_dtype)
    rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30), device_id=where if kind == "cuda" else None)
    mesh = init_device_mesh(where.type, (world_size,))  # over the default group: no new group
    log.info("rank %d of %d on %s", rank, world_size, where)
    return Runtime(device=where, compute_dtype=compute_dtype, rank=rank, world_size=world_size, sharded=True, mesh=mesh)


def shutdown(runtime: Runtime) -> None:
    """Destroy the process group (if this process created one) and free it, so that its worker
    threads stop here and not during interpreter exit.

    The caller drops the trainer first (FSDP2 keeps the group in the model's state).
    ``destroy_process_group`` only unregisters the group: gloo's worker threads run until the last
    reference to it is gone, and DTensor's sharding caches keep the device mesh, which keeps the
    group (``DeviceMesh._pg_registry``), for the life of the process. A worker thread still alive
    at interpreter exit can be releasing a finished collective's tensors, which needs the GIL, and
    the process aborts after a run that succeeded (SIGABRT, "terminate called without an active
    exception"). So the mesh's registry is emptied (the mesh is unusable after the group is gone
    anyway) and a collection frees the model's reference cycles: the group's destructor then joins
    its threads here.
    """
    if not (runtime.distributed and dist.is_initialized()):
        return
    dist.destroy_process_group()
    registry = getattr(runtime.mesh, "_pg_registry", None)  # private in torch 2.13: a dict name -> group
    if isinstance(registry, dict):
        registry.clear()
    gc.collect()


@contextlib.contextmanager
def main_first(runtime: Runtime) -> Iterator[None]:
    """Rank 0 runs the body first (e.g. a download or a bootstrap into a shared cache), then the others."""
    if not runtime.is_main:
        runtime.barrier()
    yield
    if runtime.is_main:
        runtime.barrier()
