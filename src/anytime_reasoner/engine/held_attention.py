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
  (``n'`` stacks of ``M`` rows, ``g`` query heads per key head, ``Q`` new tokens) against the held
  positions its rows see, gathered once per stack ``[n', H_kv, K, D]`` (the prompt, the thinking up to
  the latest of their cuts, their cut texts: about half of the thinking's entry), each query seeing
  its own cut and cut text (an additive mask); the stacks ordered by how many positions they see and
  run in up to ``RUNS`` calls of one width each (:class:`Stacks`); fused attention calls with many
  queries a head instead of thousands with one;
- the own part: each row's queries against its own cache ``[A, H_kv, L, D]``, with the mask
  transformers built for it (padding, causal), as plain products (L is a few tokens);

merged as one softmax: the held part joins the row's own scores as one more key whose score is its
log-sum-exp ``l_h`` and whose value is its output ``o_h`` (``e^(l_h)·o_h`` is the held positions'
``Σ e^(s)·v``). The result is the attention of the row's whole sequence, summed in another order
(float rounding: tests/engine/test_held_attention.py).

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
sampling loop; the rows that stay are stacked anew (the stacks nobody reads no longer run).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
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


STACK_COST = 8  # query rows: what one stack more costs the CPU's flash kernel (each stack and head is a call of its own)


def _stack_size(counts: torch.Tensor, queries: int) -> int:
    """The rows a stack holds, ``M``: of the entries' row counts ``[n]``, the one whose stacks cost least,
    ``Σ ceil(count / M) · (STACK_COST + M · queries)`` with ``queries`` query rows a row (``g·Q``), the
    larger on a tie. Measured on the Xeon, one decoding step's layer over 2,048 rows (``queries`` 2):
    512, 260, 134 stacks of 4, 8, 16 rows, 4.27, 3.81, 3.49 ms: fewer, fuller stacks pay although a
    few slots stay empty and a stack's rows see more positions together."""
    used = counts[counts > 0]
    if used.numel() == 0:
        return 1
    sizes = torch.unique(used).tolist()
    return min(sizes, key=lambda m: (int(((used + m - 1) // m).sum()) * (STACK_COST + m * queries), -m))


def _ranks(entry: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's place among the rows of its entry ``[A]`` (in row order), and each entry's row count ``[n]``."""
    counts = torch.bincount(entry, minlength=n)  # [n]
    order = torch.argsort(entry, stable=True)  # [A]
    first = torch.cumsum(counts, 0) - counts  # [n] each entry's first place in the order
    rank = torch.empty_like(entry)
    rank[order] = torch.arange(len(entry), device=entry.device) - first[entry[order]]  # [A]
    return rank, counts


@dataclass(frozen=True)
class Stacks:
    """Stacks whose keys are as wide: each stack's keys and values are the held positions some row of
    it sees, gathered in their order (a key carries its position in its rotary embedding, so where it
    sits does not matter), ``layers`` per layer ``[s, H_kv, K, D]``, and ``visible [s·M, K]`` what each
    slot sees of them (a stack seeing fewer than ``K`` positions is filled with positions nobody sees)."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    visible: torch.Tensor  # [s·M, K] bool
    per_entry: int  # M
    biases: dict[tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict)  # made by bias()

    @classmethod
    def gather(cls, kv: HeldKV, source: torch.Tensor, seen: torch.Tensor) -> Stacks:
        """The stacks reading entries ``source [s]`` whose slots see ``seen [s, M, P]``."""
        s, per_entry, _ = seen.shape
        union = seen.any(1)  # [s, P] what some row of the stack sees
        width = max(int(union.sum(1).max()), 1)  # K
        position = torch.argsort((~union).to(torch.uint8), dim=1, stable=True)[:, :width]  # [s, K] the union first, in order
        visible = seen.gather(2, position[:, None].expand(-1, per_entry, -1)).reshape(s * per_entry, width)  # [s·M, K]
        _, heads, held_width, dim = kv.layers[0][0].shape
        stack_head = source[:, None] * heads + torch.arange(heads, device=source.device)  # [s, H_kv]
        at = (stack_head[:, :, None] * held_width + position[:, None, :]).view(-1)  # [s·H_kv·K] into [n·H_kv·P] positions

        def take(held: torch.Tensor) -> torch.Tensor:  # [n, H_kv, P, D] -> [s, H_kv, K, D]
            return held.reshape(-1, dim).index_select(0, at).view(s, heads, width, dim)

        return cls(tuple((take(keys), take(values)) for keys, values in kv.layers), visible, per_entry)

    @property
    def count(self) -> int:
        return self.visible.shape[0] // self.per_entry

    def bias(self, per_slot: int, dtype: torch.dtype) -> torch.Tensor:
        """The additive mask of the stacked queries, ``per_slot`` of them a slot: ``[s, 1, M·per_slot, K]``
        (0 where visible, ``-inf`` elsewhere; made once per shape, for every layer and step)."""
        key = (per_slot, dtype)
        if key not in self.biases:
            width = self.visible.shape[1]
            visible = self.visible.view(self.count, 1, self.per_entry, 1, width).expand(-1, -1, -1, per_slot, -1)
            self.biases[key] = _bias(visible, dtype).view(self.count, 1, self.per_entry * per_slot, width)
        return self.biases[key]


@dataclass(frozen=True)
class HeldPrefix:
    """Where each of ``A`` rows reads the held part: ``slot [A]`` (its place ``j·M + i`` among the
    stacked queries of ``n'`` stacks of ``M``) and ``groups``, the stacks in runs of one key width
    (:class:`Stacks`), ordered by the positions they see. A stack holds rows of one entry; only the
    entries some row reads have stacks; an entry read by more rows than ``M`` fills several, its keys
    and values repeated (``M`` is chosen by the stacks' cost, :func:`_stack_size`: one entry read by
    twice the others' rows does not double them all). ``source``, ``entry [A]`` and ``seen [A, P]``
    are what it was made of (:meth:`of`), kept for :meth:`select`."""

    groups: tuple[Stacks, ...]
    slot: torch.Tensor  # [A]
    per_entry: int  # M
    source: HeldKV
    entry: torch.Tensor  # [A]
    seen: torch.Tensor  # [A, P] bool
    queries: int  # query rows a row brings to its stack per key head (g·Q)

    @classmethod
    def of(cls, kv: HeldKV, entry: torch.Tensor, seen: torch.Tensor, queries: int) -> HeldPrefix:
        """Rows reading held entry ``entry [A]`` at the positions ``seen [A, P]`` marks, each with
        ``queries`` query rows per key head (``g·Q``: query heads per key head × new tokens)."""
        rank, counts = _ranks(entry, kv.n)  # [A], [n]
        per_entry = _stack_size(counts, queries)
        stacks = (counts + per_entry - 1) // per_entry  # [n] stacks per entry (none for an entry nobody reads)
        first = torch.cumsum(stacks, 0) - stacks  # [n] each entry's first stack
        stack = first[entry] + rank // per_entry  # [A] each row's stack, in the entries' order
        n_stacks = int(stacks.sum())
        seen_by_slot = torch.zeros(n_stacks, per_entry, kv.width, dtype=torch.bool, device=entry.device)  # [n', M, P]
        seen_by_slot[stack, rank % per_entry] = seen
        sees = seen_by_slot.any(1).sum(1)  # [n'] the positions each stack's rows see
        order = torch.argsort(sees, stable=True)  # [n'] the stacks by that count
        place = torch.empty_like(order)
        place[order] = torch.arange(n_stacks, device=entry.device)  # [n'] each stack's place in that order
        source = torch.repeat_interleave(torch.arange(kv.n, device=entry.device), stacks)[order]  # [n'] entries in order
        ends = _runs(sees[order], RUNS)
        groups = tuple(
            Stacks.gather(kv, source[a:b], seen_by_slot[order[a:b]]) for a, b in zip([0, *ends[:-1]], ends, strict=True)
        )
        return cls(groups, place[stack] * per_entry + rank % per_entry, per_entry, kv, entry, seen, queries)

    def select(self, rows: torch.Tensor) -> HeldPrefix:
        """The layout of the rows ``rows`` of the batch only (those that stay in it), stacked anew: the
        stacks no staying row reads are not run again."""
        return HeldPrefix.of(self.source, self.entry[rows], self.seen[rows], self.queries)


RUNS = 3  # at most this many attention calls a layer for the held part, each over stacks of one key width


def _runs(widths: torch.Tensor, most: int) -> list[int]:
    """Split stacks sorted by their key widths ``widths [n']`` into at most ``most`` runs of one width
    each (the run's widest), so that the positions attended ``Σ run length × run width`` are fewest
    (by dynamic programming over the run ends); returns the runs' ends."""
    n = len(widths)
    end = torch.arange(1, n + 1, device=widths.device)  # [n] j: a run [i, j)
    begin = torch.arange(n, device=widths.device)  # [n] i
    cost = ((end[:, None] - begin[None, :]) * widths[:, None]).double()  # [n, n] the run [i, j): (j - i)·width[j - 1]
    cost[begin[None, :] >= end[:, None]] = float("inf")
    best = torch.cat([cost.new_zeros(1), cost.new_full((n,), float("inf"))])  # [n + 1] the fewest for the first j stacks
    back = []
    for _ in range(most):
        best_here, start = (best[None, :n] + cost).min(1)  # [n] one more run [i, j) after the best for [0, i)
        best = torch.cat([best[:1], torch.minimum(best[1:], best_here)])
        back.append(torch.where(best_here <= best[1:], start, -1))  # -1: fewer runs did as well
    ends, j = [], n
    for pointers in reversed(back):
        i = int(pointers[j - 1])
        if i < 0:
            continue
        ends.append(j)
        j = i
        if j == 0:
            break
    return ends[::-1]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of scaled queries ``q [B, h, Q, D]`` over ``k``/``v [B, h, K, D]`` with the additive
    ``bias [B, 1, Q, K]`` (0 or ``-inf``): the outputs ``[B, h, Q, D]`` and their log-sum-exps ``[B, h, Q, 1]``.
    On the CPU torch's flash kernel (its log-sum-exp is what the public sdpa does not return), else
    plain products."""
    if q.device.type == "cpu" and _CPU_FLASH is not None:
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
    held_out, held_lse = _held_part(held_prefix, int(module.layer_idx), q)  # type: ignore[arg-type]  # [A, H_kv, g·Q, D | 1]
    scores = q @ key.to(compute).transpose(-1, -2)  # [A, H_kv, g·Q, L] over the row's own keys
    if attention_mask is not None or Q > 1:  # a decoding step without a mask sees all its own keys
        allowed = _own_mask(attention_mask, Q, L, query.device)  # [A or 1, 1, Q, L]
        scores = scores + _bias(allowed, compute)[:, :, None].expand(-1, -1, group, -1, -1).reshape(-1, 1, group * Q, L)
    scores = torch.cat([scores, held_lse], dim=-1)  # [A, H_kv, g·Q, L + 1]: the held part as one more key
    weights = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))  # [A, H_kv, g·Q, L + 1]
    out = _weighted(weights[..., :L], value.to(compute)) + weights[..., L:] * held_out  # [A, H_kv, g·Q, D]
    return out.view(A, H, Q, D).transpose(1, 2).contiguous().to(query.dtype), None  # [A, Q, H, D]


SMALL_BMM = 400  # ATen's CPU bmm runs products of fewer multiply-adds a matrix (contraction × rows × columns) in a plain loop


def _weighted(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``weights [A, h, n, L] @ values [A, h, L, D]``. On the CPU, ATen's bmm runs a batch of matrices
    of fewer than ``SMALL_BMM`` multiply-adds each in its own plain loop, 2-5× slower here for the
    rows' few own keys than its BLAS path (L ≤ 8 for n·D = 48: 280-740 µs against 140-180 µs for
    2,048 rows, 2 threads); their positions are then padded with zeros up to the BLAS path."""
    n, L, D = weights.shape[-2], weights.shape[-1], values.shape[-1]
    if weights.device.type == "cpu" and n * L * D < SMALL_BMM:
        pad = -(-SMALL_BMM // (n * D)) - L
        weights, values = F.pad(weights, (0, pad)), F.pad(values, (0, 0, 0, pad))
    return weights @ values


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
    """:func:`_attend` of the rows' scaled queries ``q [A, H_kv, g·Q, D]`` over their held heads, one
    call per run of stacks (:class:`Stacks`), back in row order: ``[A, H_kv, g·Q, D]`` and ``[A, H_kv, g·Q, 1]``."""
    A, heads_kv, gq, D = q.shape
    M = held.per_entry
    n = sum(group.count for group in held.groups)
    stacked = q.new_zeros(n, heads_kv, M, gq, D)  # [n', H_kv, M, g·Q, D]
    stacked.permute(0, 2, 1, 3, 4)[held.slot // M, held.slot % M] = q
    both = q.new_empty(n, M, heads_kv, gq, D + 1)  # [n', M, H_kv, g·Q, D + 1] the outputs by slot, their log-sum-exps last
    first = 0
    for group, part in zip(held.groups, stacked.view(n, heads_kv, M * gq, D).split([g.count for g in held.groups]), strict=True):
        keys, values = group.layers[layer]  # [s, H_kv, K, D]
        out, lse = _attend(part, keys.to(q.dtype), values.to(q.dtype), group.bias(gq, q.dtype))  # [s, H_kv, M·g·Q, D | 1]
        last = first + group.count
        both[first:last] = torch.cat([out, lse], dim=-1).view(group.count, heads_kv, M, gq, D + 1).transpose(1, 2)
        first = last
    by_row = both.view(n * M, heads_kv, gq, D + 1).index_select(0, held.slot)  # [A, H_kv, g·Q, D + 1]
    return by_row[..., :D], by_row[..., D:]


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
