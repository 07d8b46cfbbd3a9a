"""The trainer's weights, streamed to a generation engine that holds its own copy (vLLM).

:func:`policy_weights` yields ``(name, tensor)`` pairs under the Hugging Face names of the
trained model, in the compute dtype, one tensor at a time:

- a plain model: each entry of ``state_dict()``; under FSDP2 each sharded parameter is gathered
  on its own (``DTensor.full_tensor()``, a collective every rank runs in the same order), so a rank
  holds one full tensor beyond its shards at any moment, never a second full model;
- LoRA: the merged weights ``W + scale · B A`` (``train.lora.merged_tensors``) for the adapted
  layers, the base tensors for the rest; under FSDP2 the full state is gathered first (to host
  memory), because a merge needs the adapter and the base weight together.

:func:`sync_engine` hands the stream to ``engine.load_weights`` (vLLM: ``reload_weights`` then a
prefix-cache reset). Engines that share the model object (transformers ``generate``) need none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from anytime_reasoner.train.logprobs import PolicyScorer


@runtime_checkable
class WeightLoadingEngine(Protocol):
    """An engine with its own weights: refreshed after every update, asleep while training."""

    def load_weights(self, named_tensors: Any) -> None: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...


def policy_weights(policy: PolicyScorer, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """The trained model's tensors as ``(hf_name, tensor)`` in ``dtype`` (see the module docstring)."""
    from anytime_reasoner.train.fsdp import is_sharded
    from anytime_reasoner.train.lora import is_lora, merged_tensors

    lm: Any = policy.lm
    if is_lora(lm):
        state = _full_state(policy) if is_sharded(policy) else None
        yield from merged_tensors(lm, dtype, state)
        return
    with torch.no_grad():
        for name, tensor in lm.state_dict().items():
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            yield name, full.detach().to(dtype)


def _full_state(policy: PolicyScorer) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from anytime_reasoner.train.checkpoint import PREFIX

    full: dict[str, Any] = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix(PREFIX): v for k, v in full.items()}


def sync_engine(engine: Any, policy: PolicyScorer, dtype: torch.dtype) -> bool:
    """Stream the policy's weights into ``engine`` if it holds its own copy; True if it did."""
    if not isinstance(engine, WeightLoadingEngine):
        return False
    engine.load_weights(policy_weights(policy, dtype))
    return True
