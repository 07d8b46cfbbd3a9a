"""The sampling loop of :class:`~anytime_reasoner.engine.hf.TransformersEngine`: ``generate``'s
sampling, over a KV cache reserved up front, with finished rows leaving the batch.

:func:`decode` does what ``model.generate`` does for temperature / top-p sampling (or greedy) on a
decoder-only causal LM, by the same operations in the same order: each step runs the model's forward
on the last token of every row, takes the last position's logits in float32, applies the caller's
logits processors, then transformers' own ``TemperatureLogitsWarper`` and ``TopPLogitsWarper``, and
draws a token (``argmax`` when greedy); finished rows get the pad id, and the loop ends when every
row has stopped or at ``max_new_tokens``.

Departures from ``generate``, for speed on a small model (``benchmarks/bench_step.py`` measures each,
docs/BENCHMARKS.md):

- The KV cache: ``DynamicCache`` grows every layer's keys and values by concatenation, copying the
  whole cache at every step. :func:`reserve` swaps each plain attention layer of the cache for a
  :class:`ReservedLayer` that holds ``capacity`` positions from the start and writes each step's keys
  and values in place; attention reads a view of the filled part. Layers of other kinds (sliding
  windows, linear attention) are left as they are.
- Finished rows leave the batch (:class:`Batch`): ``generate`` runs every row to the end of the
  call, a finished one on pad tokens (36–46% of the rows' steps in the demo's GRPO rollouts). Here a
  finished row leaves the model's batch once its stop token has run and a quarter of the batch
  (``SHRINK_AT``) has finished, so that one copy of the staying rows' keys and values serves many
  departures. The processors and the draw still see all rows (those that left with zero logits), so
  the random numbers go to the same rows; the model's forward on fewer rows can differ from the
  full batch's in float rounding (the log-probs of the demo's rollouts by ~1e-10, the same tokens).
- The draw: ``generate`` draws with ``torch.multinomial``, which for one sample takes an exponential
  variate per vocabulary entry (R·V random numbers a step: 19% of the demo's GRPO decoding on the
  CPU). The loop's default (``draw="cdf"``, :func:`draw_by_cdf`) inverts each row's cumulative
  distribution at one uniform variate: the same distribution from R random numbers, so other
  samples from the same seed. ``draw="multinomial"`` keeps ``generate``'s draw; with
  ``shrink_at=None`` the loop then samples exactly ``generate``'s tokens (tests/engine/test_decode.py,
  ``benchmarks/bench_decode.py``).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, cast

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import Cache, DynamicLayer

from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.held_attention import HeldPrefix


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


def draw_by_cdf(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs [R, V]``: the first whose cumulative probability passes a uniform
    draw scaled to the row's total (inverse-CDF sampling; a token of probability 0 is never drawn). A row
    that sums to NaN, infinity or 0 is refused, as ``torch.multinomial`` refuses it. ``[R]``"""
    cdf = probs.to(torch.float64).cumsum(dim=-1)  # [R, V]
    if not bool((cdf[:, -1].isfinite() & (cdf[:, -1] > 0)).all()):  # what torch.multinomial refuses too
        raise ValueError(
            "sampling: a row's token probabilities are NaN, infinite or all zero (the model's logits are not finite)"
        )
    uniform = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device) * cdf[:, -1:]  # [R, 1]
    return torch.searchsorted(cdf, uniform, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)  # [R]


def draw_by_multinomial(probs: torch.Tensor) -> torch.Tensor:
    """``generate``'s draw: ``torch.multinomial`` (one exponential variate per token of the vocabulary). ``[R]``"""
    return torch.multinomial(probs, num_samples=1).squeeze(1)  # [R]


Draw = Literal["cdf", "multinomial"]
DRAWS = {"cdf": draw_by_cdf, "multinomial": draw_by_multinomial}

SHRINK_AT = 0.25  # the share of a batch's rows that, once finished, leave it (see Batch)


class Batch:
    """The rows of one :func:`decode` call still run through the model: ``rows [A]``, indices into
    the call's ``R`` rows. A finished row keeps its place in ``ids`` and in the scores the processors
    see; it leaves the model's batch once its stop token has run (all its keys and values are then
    held) and ``SHRINK_AT`` of the batch have done so. Leaving copies the keys and values of the rows
    that stay into new buffers; the buffers of before the first departure (all ``R`` rows) stay as
    ``home``, each row that leaves later is written back there, and :meth:`restore` writes back the
    rest, so the cache ``decode`` returns holds every row."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows  # [A]
        self.home: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: keys, values [R, H, C, D]

    def scatter(self, logits: torch.Tensor, total: int) -> torch.Tensor:
        """``logits [A, V]`` at their rows of ``[R, V]`` (zeros on rows that left)."""
        if self.home is None:
            return logits
        scores = logits.new_zeros(total, logits.shape[-1])  # [R, V]
        scores[self.rows] = logits
        return scores

    def shrink(self, cache: Cache, ran_out: torch.Tensor, at: float | None) -> torch.Tensor | None:
        """Let the rows marked in ``ran_out [R]`` leave once they are ``at`` of the batch or more
        (never when ``at`` is None); returns the indices into the batch of the rows that stay ``[A']``,
        or None (nobody left)."""
        if at is None:
            return None
        leaving = ran_out[self.rows]  # [A]
        count = int(leaving.sum())
        layers = getattr(cache, "layers", ())
        if count == 0 or count < at * len(self.rows) or not layers or not all(isinstance(x, ReservedLayer) for x in layers):
            return None
        stay, gone = (~leaving).nonzero().squeeze(1), leaving.nonzero().squeeze(1)  # [A'], [A - A']
        if self.home is None:
            self.home = [(layer.key_buffer, layer.value_buffer) for layer in layers]
        for layer, home in zip(layers, self.home, strict=True):
            for buffer, whole in zip((layer.key_buffer, layer.value_buffer), home, strict=True):
                if buffer is not whole:  # rows that joined home's buffers at an earlier departure
                    whole[self.rows[gone], :, : layer.filled] = buffer[gone, :, : layer.filled]
                whole[self.rows[gone], :, layer.filled :] = 0
            layer.key_buffer, layer.value_buffer = (
                _take_rows(b, stay, layer.filled) for b in (layer.key_buffer, layer.value_buffer)
            )
            layer._fill(layer.filled)
        self.rows = self.rows[stay]
        return stay

    def restore(self, cache: Cache) -> Cache:
        """``cache`` with every one of the call's rows: those still in the batch written back home."""
        if self.home is None:
            return cache
        layers = cast(list[ReservedLayer], cache.layers)  # home exists: every layer is reserved
        for i, (layer, (keys, values)) in enumerate(zip(layers, self.home, strict=True)):
            keys[self.rows, :, : layer.filled] = layer.key_buffer[:, :, : layer.filled]
            values[self.rows, :, : layer.filled] = layer.value_buffer[:, :, : layer.filled]
            cache.layers[i] = ReservedLayer.reserved(keys, values, layer.filled)
        return cache


def _take_rows(buffer: torch.Tensor, rows: torch.Tensor, filled: int) -> torch.Tensor:
    """A new buffer of ``buffer [B, H, C, D]``'s capacity with the first ``filled`` positions of ``rows [b]``."""
    taken = buffer.new_empty(len(rows), *buffer.shape[1:])  # [b, H, C, D]
    taken[:, :, :filled] = buffer[rows, :, :filled]
    return taken


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
    *,
    shrink_at: float | None = SHRINK_AT,
    draw: Draw = "cdf",
    position_offset: torch.Tensor | None = None,
    held: HeldPrefix | None = None,
    first_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Cache]:
    """Sample after the left-padded prefixes ``ids [R, T]`` (``mask [R, T]``) as ``generate`` would;
    returns ``[R, T + new]`` and the cache, which then holds every position but the last
    (``[R, H, T + new - 1, D]`` per layer; a row that left the batch early holds its positions
    through its stop token, zeros after). ``cache`` holds ``ids[:, :-1]`` already (only the last
    token is run) or is None (the whole prefix is run here). ``processors`` see ``(ids so far,
    float32 logits)`` of all ``R`` rows before the warpers. Once ``shrink_at`` of the rows in the
    batch are finished, they leave it (see the module docstring). ``first_logits [R, V]``: the logits
    after ``ids``, computed by the caller (``ids`` have all run, their keys held in ``held``: a prefix
    shared by several rows runs once); the loop then starts by sampling, and ``cache`` (None) holds
    only the sampled tokens."""
    warpers = sampling_warpers(params)
    stops = torch.tensor(list(params.stop_token_ids), dtype=ids.dtype, device=ids.device)  # [s]
    positions = position_ids(mask)  # [R, T]
    if position_offset is not None:
        positions = positions + position_offset[:, None]  # [R, T]
    inputs, step_positions = (ids, positions) if cache is None else (ids[:, -1:], positions[:, -1:])
    if first_logits is not None:  # ids ran already: the model's mask covers the sampled tokens only
        step_positions, mask = positions[:, -1:], mask[:, :0]
    capacity = ids.shape[1] + params.max_new_tokens
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)  # [R]
    batch = Batch(torch.arange(ids.shape[0], device=ids.device))
    kwargs = forward_kwargs(model)
    name = cache_kwarg(model)
    reserved = False
    for step in range(params.max_new_tokens):
        if step == 0 and first_logits is not None:
            logits = first_logits.to(dtype=torch.float32)  # [R, V]
        else:
            if held is not None:
                kwargs["held_prefix"] = held
            out = model(
                input_ids=inputs, attention_mask=mask, position_ids=step_positions, use_cache=True, **{name: cache}, **kwargs
            )
            if not reserved:
                cache, reserved = reserve(output_cache(out), capacity), True
            logits = batch.scatter(out.logits[:, -1].to(dtype=torch.float32), ids.shape[0])  # [R, V]
        seen = cast(torch.LongTensor, ids)  # [R, T + step]
        scores = warpers(seen, processors(seen, logits))  # [R, V]
        if params.temperature == 0:
            tokens = torch.argmax(scores, dim=-1)  # [R]
        else:
            tokens = DRAWS[draw](torch.softmax(scores, dim=-1))  # [R]
        tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad_id))
        ids = torch.cat([ids, tokens[:, None]], dim=-1)  # [R, T + step + 1]
        ran_out = ~unfinished  # rows whose stop token (or a pad after it) ran in this step: all their keys are held
        unfinished &= ~torch.isin(tokens, stops)
        if not bool(unfinished.any()):
            break
        keep = batch.shrink(cast(Cache, cache), ran_out, shrink_at)  # [A'] of the batch's rows, or None
        if keep is not None:
            mask, step_positions = mask[keep], step_positions[keep]  # [A', T + step], [A', 1]
            held = held.select(keep) if held is not None else None
        inputs, step_positions = tokens[batch.rows, None], step_positions[:, -1:] + 1  # [A, 1]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)  # [A, T + step + 1]
    return ids, batch.restore(cast(Cache, cache))
