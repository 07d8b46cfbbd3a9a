"""Summaries decoded over their thinking's held keys and values, read in place: one copy per thinking.

The summary phase samples A summaries after each of S cuts of every thinking (docs/ALGORITHM.md
§3.4), and all of a thinking's S·A summaries read the same held keys and values (the prompt and the
thinking up to their cut). Forked row by row (``engine/prefix_cache.fork``) every summary gets its own
copy of them, and every decoding step of every summary reads its copy again, one query against its
own copy. Here the thinking's keys and values are gathered once (:class:`HeldKV`), the inserted cut
texts run once per cut and are added to them (:meth:`HeldKV.with_rests`), a summary row's own cache
holds only its sampled tokens, and each attention layer attends in two parts that it then merges
(the "cascade" of shared-prefix decoding):

- the held part: the queries of the rows reading one thinking stacked ``[n', H_kv, M·g·Q, D]``
  (``n'`` stacks of ``M`` rows, ``g`` query heads per key head, ``Q`` new tokens) against the
  thinking's keys ``[n', H_kv, P, D]``, each query seeing its own cut and cut text (an additive
  mask); one fused attention call with many queries a head instead of thousands with one;
- the own part: each row's queries against its own cache ``[A, H_kv, L, D]``, with the mask
  transformers built for it (padding, causal), as plain products (L is a few tokens);

and the two are merged by their log-sum-exps ``l``: ``out = (o_h·e^(l_h - m) + o_o·e^(l_o - m)) /
(e^(l_h - m) + e^(l_o - m))``, ``m = max(l_h, l_o)``. The result is the attention of the row's whole
sequence, summed in another order (float rounding: tests/engine/test_held_attention.py).

How it plugs into transformers: registered as the attention implementation ``anytime_held`` (with
sdpa's mask builder); :func:`attending_held` switches a model to it for one engine call (the public
``set_attn_implementation``) and back. The rows' layout reaches every layer as the forward keyword
``held_prefix`` (a :class:`HeldPrefix`), as ``train.tree_attention``'s layout does; without it the
function is sdpa.

Departures: attention dropout, logit soft-capping and sliding windows are refused (the engine keeps the
row-by-row fork for models declaring a sliding window). The held part's log-sum-exp on the CPU comes
from torch's fused flash kernel for the CPU (``aten::_scaled_dot_product_flash_attention_for_cpu``: the
public ``scaled_dot_product_attention`` does not return it); on other devices it runs as plain
products (not yet measured on a GPU). Rows whose sampled tokens stop early leave the batch as in the
sampling loop; their stacks keep their places.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

IMPLEMENTATION = "anytime_held"


@dataclass(frozen=True)
class HeldKV:
    """The held keys and values a chunk of summaries reads: per layer ``(keys, values)``
    ``[n, H_kv, P, D]`` (one entry per thinking, gathered once), and ``start [n]``, the first
    position of each that is not left padding."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    start: torch.Tensor  # [n]

    @property
    def n(self) -> int:
        return int(self.start.shape[0])

    @property
    def width(self) -> int:
        return int(self.layers[0][0].shape[2])

    def seen(self, entry: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """What rows reading entries ``entry [A]`` up to ``end [A]`` see: positions ``[start, end)``. ``[A, P]``"""
        positions = torch.arange(self.width, device=entry.device)  # [P]
        return (positions >= self.start[entry][:, None]) & (positions < end[:, None])

    def with_rests(
        self, entry: torch.Tensor, seen: torch.Tensor, rests: Sequence[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor
    ) -> tuple[HeldKV, torch.Tensor]:
        """Entries extended by the rests run after them: ``rests`` per layer ``[k, H_kv, U, D]`` (prefix
        ``i``'s, left-padded: ``mask [k, U]``) placed after entry ``entry[i]``'s positions, ``U`` a prefix
        (in its order among the entry's). Returns the extended keys and values ``[n, H_kv, P + m·U, D]``
        and what each prefix sees ``[k, P + m·U]``: ``seen [k, P]``, then its own rest."""
        rank, counts = _ranks(entry, self.n)  # [k], [n]
        per_entry = int(counts.max())  # m
        k, U = mask.shape
        layers = []
        for (keys, values), rest in zip(self.layers, rests, strict=True):
            extended = []
            for held, run in zip((keys, values), rest, strict=True):
                n, heads, width, dim = held.shape
                tail = held.new_zeros(n, heads, per_entry, U, dim)  # [n, H_kv, m, U, D]
                tail[entry, :, rank] = run  # [k, H_kv, U, D] at each prefix's place
                extended.append(torch.cat([held, tail.view(n, heads, per_entry * U, dim)], dim=2))
            layers.append((extended[0], extended[1]))
        own = torch.zeros(k, per_entry, U, dtype=torch.bool, device=seen.device)  # [k, m, U]
        own[torch.arange(k, device=seen.device), rank] = mask.bool()
        return HeldKV(tuple(layers), self.start), torch.cat([seen, own.view(k, per_entry * U)], dim=1)


def _stack_size(counts: torch.Tensor) -> int:
    """The rows a stack holds, ``M``: of the entries' row counts ``[n]``, the one that wastes the fewest
    slots (``M·Σ ceil(count / M)``), the larger on a tie."""
    used = counts[counts > 0]
    if used.numel() == 0:
        return 1
    sizes = torch.unique(used).tolist()
    return min(sizes, key=lambda m: (m * int(((used + m - 1) // m).sum()), -m))


def _ranks(entry: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's place among the rows of its entry ``[A]`` (in row order), and each entry's row count ``[n]``."""
    counts = torch.bincount(entry, minlength=n)  # [n]
    order = torch.argsort(entry, stable=True)  # [A]
    first = torch.cumsum(counts, 0) - counts  # [n] each entry's first place in the order
    rank = torch.empty_like(entry)
    rank[order] = torch.arange(len(entry), device=entry.device) - first[entry[order]]  # [A]
    return rank, counts


@dataclass(frozen=True)
class HeldPrefix:
    """Where each of ``A`` rows reads the held part: ``slot [A]`` (its place ``e·M + i`` among the
    stacked queries of ``n'`` stacks of ``M``), ``visible [n'·M, P]`` (the held positions each slot
    sees) and ``layers`` (each stack's keys and values ``[n', H_kv, P, D]``). An entry read by more
    rows than ``M`` fills several stacks, its keys and values repeated (``M`` is chosen so that the
    stacks waste the fewest slots: one entry read by twice the others' rows does not double them all)."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    slot: torch.Tensor  # [A]
    visible: torch.Tensor  # [n'·M, P] bool
    per_entry: int  # M
    biases: dict[tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict)  # made by bias(), shared by select()

    @classmethod
    def of(cls, kv: HeldKV, entry: torch.Tensor, seen: torch.Tensor) -> HeldPrefix:
        """Rows reading held entry ``entry [A]`` at the positions ``seen [A, P]`` marks."""
        rank, counts = _ranks(entry, kv.n)  # [A], [n]
        per_entry = _stack_size(counts)
        stacks = (counts + per_entry - 1) // per_entry  # [n] stacks per entry
        first = torch.cumsum(stacks, 0) - stacks  # [n] each entry's first stack
        slot = (first[entry] + rank // per_entry) * per_entry + rank % per_entry  # [A]
        visible = torch.zeros(int(stacks.sum()) * per_entry, kv.width, dtype=torch.bool, device=entry.device)  # [n'·M, P]
        visible[slot] = seen
        layers = kv.layers
        if int(stacks.max()) > 1:  # some entries fill several stacks: their keys and values repeated
            source = torch.repeat_interleave(torch.arange(kv.n, device=entry.device), stacks)  # [n']
            layers = tuple((keys.index_select(0, source), values.index_select(0, source)) for keys, values in kv.layers)
        return cls(layers, slot, visible, per_entry)

    def select(self, rows: torch.Tensor) -> HeldPrefix:
        """The same layout for the rows ``rows`` of the batch only (those that stay in it)."""
        return HeldPrefix(self.layers, self.slot[rows], self.visible, self.per_entry, self.biases)

    def bias(self, per_slot: int, dtype: torch.dtype) -> torch.Tensor:
        """The additive mask of the stacked queries, ``per_slot`` of them a slot: ``[n, 1, M·per_slot, P]``
        (0 where visible, ``-inf`` elsewhere; made once per shape, for every layer and step)."""
        key = (per_slot, dtype)
        if key not in self.biases:
            width = self.visible.shape[1]
            n = self.visible.shape[0] // self.per_entry
            visible = self.visible.view(n, 1, self.per_entry, 1, width).expand(-1, -1, -1, per_slot, -1)
            self.biases[key] = _bias(visible, dtype).view(n, 1, self.per_entry * per_slot, width)
        return self.biases[key]


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, fused: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of scaled queries ``q [B, h, Q, D]`` over ``k``/``v [B, h, K, D]`` with the additive
    ``bias [B, 1, Q, K]`` (0 or ``-inf``): the outputs ``[B, h, Q, D]`` and their log-sum-exps ``[B, h, Q, 1]``.
    ``fused`` on the CPU: torch's flash kernel (its log-sum-exp is what the public sdpa does not return;
    it pays for many queries a head, the held part's); else the plain products (a row's own few keys)."""
    if fused and q.device.type == "cpu" and _CPU_FLASH is not None:
        out, lse = _CPU_FLASH(q, k, v, 0.0, False, attn_mask=bias, scale=1.0)
        return out, lse.unsqueeze(-1)
    scores = q @ k.transpose(-1, -2) + bias  # [B, h, Q, K]
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # [B, h, Q, 1]
    return torch.exp(scores - lse) @ v, lse


_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def held_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    held_prefix: HeldPrefix | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: sdpa without ``held_prefix``; with it, each row's queries
    attend over its held head and its own cache (module docstring).

    ``query [A, H, Q, D]``, ``key``/``value [A, H_kv, L, D]`` (the rows' own cache) → ``[A, Q, H, D]``.
    """
    if held_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if (dropout and module.training) or kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("held-prefix attention: attention dropout, soft-capping and sliding windows are not supported")
    A, H, Q, D = query.shape
    heads_kv, L = key.shape[1], key.shape[2]
    group = H // heads_kv
    scale = scaling if scaling is not None else D**-0.5
    compute = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) and query.device.type != "cpu" else query.dtype
    q = query.reshape(A, heads_kv, group * Q, D).to(compute) * scale  # [A, H_kv, g·Q, D] query head = kv head · g + i

    allowed = _own_mask(attention_mask, Q, L, query.device)  # [A or 1, 1, Q, L]
    own_bias = _bias(allowed, compute)[:, :, None].expand(-1, -1, group, -1, -1).reshape(allowed.shape[0], 1, group * Q, L)
    own_out, own_lse = _attend(q, key.to(compute), value.to(compute), own_bias, fused=False)  # [A, H_kv, g·Q, D], [.., 1]
    held_out, held_lse = _held_part(held_prefix, int(module.layer_idx), q)  # type: ignore[arg-type]  # the same shapes
    top = torch.maximum(own_lse, held_lse)
    own_weight, held_weight = torch.exp(own_lse - top), torch.exp(held_lse - top)  # [A, H_kv, g·Q, 1]
    out = (own_out * own_weight + held_out * held_weight) / (own_weight + held_weight)
    return out.view(A, H, Q, D).transpose(1, 2).contiguous().to(query.dtype), None  # [A, Q, H, D]


def _bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An additive mask of ``allowed``: 0 where allowed, ``-inf`` elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def _own_mask(attention_mask: torch.Tensor | None, queries: int, keys: int, device: torch.device) -> torch.Tensor:
    """The own part's allowed pairs ``[A or 1, 1, Q, L]``: transformers' boolean mask (causal where it
    passed none), each query also allowed its own position, so that a padding query (whose
    output nobody reads) has a key to attend to and no row is empty."""
    q, k = torch.arange(queries, device=device), torch.arange(keys, device=device)
    itself = (k[None, :] == q[:, None] + keys - queries)[None, None]  # [1, 1, Q, L]
    if attention_mask is None:
        return (k[None, :] <= q[:, None] + keys - queries)[None, None]
    allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0  # a float mask is additive
    return allowed | itself


def _held_part(held: HeldPrefix, layer: int, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_attend` of the rows' scaled queries ``q [A, H_kv, g·Q, D]`` over their held heads, back in
    row order: ``[A, H_kv, g·Q, D]`` and ``[A, H_kv, g·Q, 1]``."""
    keys, values = held.layers[layer]  # [n', H_kv, P, D]
    n, heads_kv, _, _ = keys.shape
    A, _, gq, D = q.shape
    M = held.per_entry
    stacked = q.new_zeros(n * M, heads_kv, gq, D).index_copy_(0, held.slot, q)  # [n·M, H_kv, g·Q, D]
    stacked = stacked.view(n, M, heads_kv, gq, D).transpose(1, 2).reshape(n, heads_kv, M * gq, D)
    out, lse = _attend(stacked, keys.to(q.dtype), values.to(q.dtype), held.bias(gq, q.dtype))  # [n, H_kv, M·g·Q, D | 1]
    return _by_row(out, held, gq), _by_row(lse, held, gq)


def _by_row(stacked: torch.Tensor, held: HeldPrefix, gq: int) -> torch.Tensor:
    """``[n, H_kv, M·g·Q, X]`` back to the rows' order ``[A, H_kv, g·Q, X]``."""
    n, heads_kv, _, width = stacked.shape
    by_slot = stacked.view(n, heads_kv, held.per_entry, gq, width).transpose(1, 2).reshape(-1, heads_kv, gq, width)
    return by_slot.index_select(0, held.slot)


def supports_held_attention(model: Any) -> bool:
    """True when the model's attention layers run through transformers' attention registry (so the
    implementation can be switched per call) and all attend over the whole sequence (no sliding
    window, by ``layer_types`` where the config names them)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    if not getattr(base, "_supports_attention_backend", False):
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(kind == "full_attention" for kind in layer_types)
    return not getattr(config, "use_sliding_window", getattr(config, "sliding_window", None) is not None)


def register() -> str:
    """Make ``anytime_held`` a transformers attention implementation (idempotent); returns its name."""
    AttentionInterface.register(IMPLEMENTATION, held_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return IMPLEMENTATION


@contextmanager
def attending_held(model: Any) -> Iterator[None]:
    """``model`` runs its attention through :func:`held_attention_forward` inside the block, and its own
    implementation again after it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    base.set_attn_implementation(register())
    try:
        yield
    finally:
        base.set_attn_implementation(before)
