"""The sampling loop of :class:`~anytime_reasoner.engine.hf.TransformersEngine`: ``generate``'s
sampling, over a KV cache reserved up front.

:func:`decode` does what ``model.generate`` does for temperature / top-p sampling (or greedy) on a
decoder-only causal LM, by the same operations in the same order, so it samples the same tokens from
the same RNG state: each step runs the model's forward on the last token of every row, takes the
last position's logits in float32, applies the caller's logits processors, then transformers' own
``TemperatureLogitsWarper`` and ``TopPLogitsWarper``, and draws with ``torch.multinomial`` (``argmax``
when greedy); finished rows get the pad id, and the loop ends when every row has stopped or at
``max_new_tokens``.

Departure from ``generate``, for speed on a small model: ``DynamicCache`` grows every layer's keys
and values by concatenation, copying the whole cache at every step. :func:`reserve` swaps each plain
attention layer of the cache for a :class:`ReservedLayer` that holds ``capacity`` positions from the
start and writes each step's keys and values in place; attention reads a view of the filled part.
Layers of other kinds (sliding windows, linear attention) are left as they are. With generate's own
per-step bookkeeping gone too, the thinking phase of the demo's rollouts runs 1.18x faster than under
``generate`` (``benchmarks/bench_decode.py``, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import inspect
from typing import Any, cast

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import Cache, DynamicLayer

from anytime_reasoner.engine.base import SamplingParams


class ReservedLayer(DynamicLayer):
    """A plain attention layer's keys and values in buffers of ``capacity`` positions, written in
    place; ``keys`` / ``values`` are views of the filled part ``[B, H, filled, D]``."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        batch, heads, filled, dim = keys.shape  # [B, H, L, D]
        key_buffer = keys.new_empty(batch, heads, max(capacity, filled), dim)  # [B, H, C, D]
        value_buffer = values.new_empty(batch, values.shape[1], max(capacity, filled), values.shape[-1])
        key_buffer[:, :, :filled] = keys
        value_buffer[:, :, :filled] = values
        self._adopt(key_buffer, value_buffer, filled)

    @classmethod
    def reserved(cls, key_buffer: torch.Tensor, value_buffer: torch.Tensor, filled: int) -> ReservedLayer:
        """A layer whose buffers are ``key_buffer``/``value_buffer [B, H, C, D]`` themselves (no copy),
        the first ``filled`` positions of them held."""
        layer = cls.__new__(cls)
        DynamicLayer.__init__(layer)
        layer._adopt(key_buffer, value_buffer, filled)
        return layer

    def _adopt(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, filled: int) -> None:
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.device, self.is_initialized = key_buffer.device, True
        self._fill(filled)

    def _fill(self, filled: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.filled = filled
        keys, values = self.key_buffer[:, :, :filled], self.value_buffer[:, :, :filled]  # [B, H, filled, D]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self.filled + new > self.key_buffer.shape[-2]:  # past the reservation: grow like DynamicLayer
            keys, values = self._fill(self.filled)
            self.key_buffer = torch.cat([keys, key_states], dim=-2)
            self.value_buffer = torch.cat([values, value_states], dim=-2)
        else:
            self.key_buffer[:, :, self.filled : self.filled + new] = key_states
            self.value_buffer[:, :, self.filled : self.filled + new] = value_states
        return self._fill(self.filled + new)

    def get_seq_length(self) -> int:
        return self.filled

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop: pass a negative number of tokens to remove, got {tokens_to_remove}")
        self._fill(self.filled + tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
        self._fill(self.filled)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self._fill(self.filled)

    def reset(self) -> None:
        self._fill(0)


def reserve(cache: Any, capacity: int) -> Any:
    """Swap every plain attention layer of ``cache`` (exactly ``DynamicLayer``, filled) for a
    :class:`ReservedLayer` of ``capacity`` positions; returns ``cache``."""
    for i, layer in enumerate(getattr(cache, "layers", ())):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if type(layer) is DynamicLayer and keys is not None and values is not None and keys.dim() == 4:
            cache.layers[i] = ReservedLayer(keys, values, capacity)
    return cache


def sampling_warpers(params: SamplingParams) -> LogitsProcessorList:
    """transformers' temperature and top-p warpers, as ``generate`` adds them (none when greedy)."""
    warpers = LogitsProcessorList()
    if params.temperature == 0:
        return warpers
    if params.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(params.temperature))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=params.top_p, min_tokens_to_keep=1))
    return warpers


def _forward_parameters(model: Any) -> Any:
    """The named parameters of the model's forward (a peft wrapper, which takes ``**kwargs``, is looked through)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(base.forward).parameters


def cache_kwarg(model: Any) -> str:
    """The forward's name for the cache: ``cache`` in transformers ≥ 5.2x, ``past_key_values`` before."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def forward_kwargs(model: Any) -> dict[str, Any]:
    """``logits_to_keep=1`` where the forward takes it (the logits of the last position only)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (0 on padding), as ``generate`` derives them. ``[k, T]``"""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def output_cache(out: Any) -> Any | None:
    """The cache a forward returned (``cache`` in transformers ≥ 5.2x, ``past_key_values`` before)."""
    for name in ("cache", "past_key_values"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return None


def decode(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cache: Cache | None,
    params: SamplingParams,
    processors: LogitsProcessorList,
    pad_id: int,
) -> tuple[torch.Tensor, Cache]:
    """Sample after the left-padded prefixes ``ids [R, T]`` (``mask [R, T]``) as ``generate`` would;
    returns ``[R, T + new]`` and the cache, which then holds every position but the last
    (``[R, H, T + new - 1, D]`` per layer). ``cache`` holds ``ids[:, :-1]`` already (only the last
    token is run) or is None (the whole prefix is run here). ``processors`` see ``(ids so far,
    float32 logits)`` before the warpers."""
    warpers = sampling_warpers(params)
    stops = torch.tensor(list(params.stop_token_ids), dtype=ids.dtype, device=ids.device)  # [s]
    positions = position_ids(mask)  # [R, T]
    inputs, step_positions = (ids, positions) if cache is None else (ids[:, -1:], positions[:, -1:])
    capacity = ids.shape[1] + params.max_new_tokens
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)  # [R]
    kwargs = forward_kwargs(model)
    name = cache_kwarg(model)
    for step in range(params.max_new_tokens):
        out = model(input_ids=inputs, attention_mask=mask, position_ids=step_positions, use_cache=True, **{name: cache}, **kwargs)
        if step == 0:
            cache = reserve(output_cache(out), capacity)
        seen = cast(torch.LongTensor, ids)  # [R, T + step]
        scores = warpers(seen, processors(seen, out.logits[:, -1].to(dtype=torch.float32)))  # [R, V]
        if params.temperature == 0:
            tokens = torch.argmax(scores, dim=-1)  # [R]
        else:
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)  # [R]
        tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad_id))
        ids = torch.cat([ids, tokens[:, None]], dim=-1)  # [R, T + step + 1]
        unfinished &= ~torch.isin(tokens, stops)
        if not bool(unfinished.any()):
            break
        inputs, step_positions = tokens[:, None], step_positions[:, -1:] + 1  # [R, 1]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)  # [R, T + step + 1]
    return ids, cast(Cache, cache)
