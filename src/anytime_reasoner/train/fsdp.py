"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the policy, and generation with it.

Sharding: each decoder layer (the classes a transformers model lists in ``_no_split_modules``) is
one FSDP unit; the :class:`~anytime_reasoner.train.logprobs.PolicyScorer` around the model is the
root unit and holds the rest (embeddings, final norm, output head — tied or not). Parameters are
float32 shards (master weights); ``MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=fp32)``
all-gathers them in the compute dtype and reduces gradients in float32. The gradient reduction
*sums* over ranks (divide factor 1): the loss of each rank is already divided by the global
normalizer (``train.update``), so the summed gradient is the one-process gradient.

Generation (:func:`unsharded`): the HF engine decodes one token per forward and the ranks stop at
different lengths, so per-forward all-gathers would deadlock. Every unit is all-gathered once and
kept unsharded for the whole rollout (reshard-after-forward off), then resharded: no collective
runs while generating. This holds the full model in the compute dtype on each GPU for the
rollout, as a colocated inference engine would.

Activation checkpointing is transformers' own (``gradient_checkpointing_enable``, non-reentrant):
it checkpoints each layer's ``forward`` inside the module's hooks, so FSDP2's hooks run once, and
the layer is gathered again by FSDP2's pre-backward hook before backward recomputes it.

Generation runs with ``synced_gpus=False`` (``engine.hf``): the model is whole on every rank, so
no rank needs to keep stepping for the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from anytime_reasoner.train.logprobs import PolicyScorer, packed_logprobs
from anytime_reasoner.train.runtime import Runtime
from anytime_reasoner.train.update import stand_in_row


def _transformers_model(lm: Any) -> Any:
    """The transformers model inside ``lm`` (a peft model wraps one)."""
    get_base = getattr(lm, "get_base_model", None)
    return get_base() if callable(get_base) else lm


def decoder_layers(lm: Any) -> list[torch.nn.Module]:
    """The repeated blocks of ``lm``: modules whose class is in ``_no_split_modules``."""
    names = set(getattr(_transformers_model(lm), "_no_split_modules", None) or [])
    layers = [m for m in lm.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(lm).__name__}: no decoder layers found (its _no_split_modules is {sorted(names)})")
    return layers


def enable_activation_checkpointing(lm: Any) -> None:
    """transformers' gradient checkpointing of every decoder layer (non-reentrant)."""
    _transformers_model(lm).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def shard_policy(scorer: PolicyScorer, runtime: Runtime) -> PolicyScorer:
    """``fully_shard`` each decoder layer, then the scorer (the root); gradients sum over ranks.
    Runs one stand-in forward so the root is initialized before anything else calls a layer, then
    reshards (the root keeps its parameters whole after a forward): build the optimizer after this."""
    policy = MixedPrecisionPolicy(param_dtype=runtime.compute_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(scorer.lm):
        fully_shard(layer, mesh=runtime.mesh, mp_policy=policy)
    fully_shard(scorer, mesh=runtime.mesh, mp_policy=policy)
    for unit in fsdp_units(scorer):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum
    with torch.no_grad():
        packed_logprobs(scorer, stand_in_row(0, runtime.device))
    for unit in fsdp_units(scorer):
        unit.reshard()
    return scorer


def fsdp_units(module: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def unsharded(scorer: torch.nn.Module) -> Iterator[None]:
    """Inside: every parameter of ``scorer`` is whole (compute dtype) and forwards run no
    collective; the sharding is restored on exit. A no-op for an unsharded module."""
    units = fsdp_units(scorer)
    if not units:
        yield
        return
    layers = [u for u in units if u is not scorer]
    for unit in units:
        unit.unshard()
    for layer in layers:
        layer.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for layer in layers:
            layer.set_reshard_after_forward(True, recurse=False)
        for unit in units:
            unit.reshard()
