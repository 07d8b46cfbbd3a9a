"""The trainer's weights, streamed to a generation engine that holds its own copy (vLLM).

:func:`policy_weights` yields ``(name, tensor)`` pairs under the Hugging Face names of the
trained model, in the compute dtype, one tensor at a time:

- a plain model: each entry of ``state_dict()``; under FSDP2 each sharded parameter is gathered
  on its own (``DTensor.full_tensor()``, a collective every rank runs in the same order), so a rank
  holds one full tensor beyond its shards at any moment, never a second full model;
- LoRA: the merged weights ``W + scale · B A`` (``train.lora.merged_tensors``) for the adapted
  layers, the base tensors for the rest; under FSDP2 each tensor a merge needs (``W``, ``A``, ``B``)
  is gathered when it is read, so a rank holds one layer's full tensors at a time.

:func:`sync_engine` hands the stream to ``engine.load_weights`` (vLLM: ``reload_weights`` then a
prefix-cache reset). Engines that share the model object (transformers ``generate``) need none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from anytime_reasoner.train.fsdp import is_sharded
from anytime_reasoner.train.logprobs import PolicyScorer
from anytime_reasoner.train.lora import is_lora, merged_tensors


@runtime_checkable
class WeightLoadingEngine(Protocol):
    """An engine with its own weights: refreshed after every update, asleep while training."""

    def load_weights(self, named_tensors: Any) -> None: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...


def policy_weights(policy: PolicyScorer, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """The trained model's tensors as ``(hf_name, tensor)`` in ``dtype`` (see the module docstring)."""
    lm: Any = policy.lm
    if is_lora(lm):
        yield from merged_tensors(lm, dtype, Gathered(lm.state_dict()) if is_sharded(policy) else None)
        return
    with torch.no_grad():
        for name, tensor in lm.state_dict().items():
            yield name, _full(tensor).detach().to(dtype)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) DTensor: a collective every rank runs."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor


class Gathered(Mapping[str, torch.Tensor]):
    """A sharded state dict whose values are gathered (``full_tensor``) when read, one at a time."""

    def __init__(self, live: Mapping[str, torch.Tensor]) -> None:
        self.live = live

    def __getitem__(self, key: str) -> torch.Tensor:
        with torch.no_grad():
            return _full(self.live[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.live)

    def __len__(self) -> int:
        return len(self.live)


def sync_engine(engine: Any, policy: PolicyScorer, dtype: torch.dtype) -> bool:
    """Stream the policy's weights into ``engine`` if it holds its own copy; True if it did."""
    if not isinstance(engine, WeightLoadingEngine):
        return False
    engine.load_weights(policy_weights(policy, dtype))
    return True
