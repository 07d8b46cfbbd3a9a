"""Tree attention: the packed rows' attention computed only over the pairs the tree rule allows.

A dense tree mask (``train.masks.dense_attention_mask``) makes every layer attend over all
``T × T`` pairs of a row and then throws most of them away: a summary block of ~16 tokens sees a
trunk prefix and itself, yet pays for the whole row. Here each row is cut into its segments
(``train.packing``: a trunk per tree, then its summary blocks) and attention runs per kind of
segment, through ``scaled_dot_product_attention``:

- trunks: every trunk gathered into ``[n_trunks, H, L, D]`` (L = the longest trunk), causal;
- blocks: every block's queries ``[n_blocks, H, Q, D]`` against its trunk prefix followed by itself
  ``[n_blocks, H, P + Q, D]`` (P = the longest visible prefix), with a small mask ``[n_blocks, 1, Q, P + Q]``;
  a tree that reads its prompt from an earlier tree of the row (``train.packing.merge_rows``) puts
  that prompt before its blocks' prefixes, and its trunk is attended the same way (the prompt, then
  itself causally).

The work is ``Σ L² + Σ Q·(P + Q)`` instead of ``N·T²``, and no ``[N, 1, T, T]`` float mask exists.
Segments of very different lengths would pad each other to the longest (a GRPO batch's trunks, a
prompt and one response each, run from ~80 to ~270 tokens: 2.3x the causal pairs of their own
lengths), so each kind is split into buckets of similar lengths (``buckets``), one ``sdpa`` call each.
Padding tokens get zero outputs (no real token attends to them, so they change nothing).

How it plugs into transformers: the function is registered in transformers' attention registry
as ``anytime_tree`` (with sdpa's mask builder). A model loaded with that implementation runs
exactly as with sdpa unless a :class:`TreeLayout` is passed through the decoder's keyword
arguments (``tree_layout=``, beside an empty placeholder mask), which transformers hands to every
attention layer; generation,
evaluation and plain causal rows therefore go through sdpa unchanged. The layout is built once per
micro-batch (:meth:`TreeLayout.of`) and shared by all layers.

Departures: attention dropout, logit soft-capping and sliding windows are not supported (the
function refuses a module that declares them); FlexAttention (``model.attention=flex``) is the
CUDA path, since it has no backward on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from anytime_reasoner.train.packing import PADDING, TRUNK, PackedBatch

IMPLEMENTATION = "anytime_tree"
BUCKET_RATIO = 0.8  # a bucket of segments holds lengths down to this share of its longest ...
BUCKET_LEAST = 8  # ... and at least this many segments (each bucket is one more sdpa call per layer)


@dataclass(frozen=True)
class _Group:
    """Segments attended in one ``sdpa`` call: queries at ``(rows, query_index)``, keys at
    ``(rows, key_index)``; ``valid`` marks real queries, ``mask`` the allowed pairs (None: causal)."""

    rows: torch.Tensor  # [n] the row of each segment
    query_index: torch.Tensor  # [n, Q] row positions of the queries (clamped inside the row)
    key_index: torch.Tensor  # [n, K] row positions of the keys
    valid: torch.Tensor  # [n, Q] bool: a real query of the segment
    mask: torch.Tensor | None  # [n, 1, Q, K] bool, or None for plain causal (K = Q)


@dataclass(frozen=True)
class TreeLayout:
    """The segments of a batch of packed rows, as gather indices (see the module docstring)."""

    trunks: tuple[_Group, ...]  # by length (see ``buckets``)
    blocks: tuple[_Group, ...]  # by visible prefix + length (shared prompts' trunks among them)

    @classmethod
    def of(cls, batch: PackedBatch) -> TreeLayout:
        """Segments of ``batch`` (rows of one or several trees) on its device."""
        seg, doc = batch.segment_ids, batch.doc_ids  # [N, T]
        device = seg.device
        pos = torch.arange(seg.shape[1], device=device)  # [T]
        key = doc * (int(seg.max()) + 2) + seg  # [N, T] one value per (tree, segment)
        start = torch.ones_like(seg, dtype=torch.bool)  # [N, T] first token of a segment
        start[:, 1:] = key[:, 1:] != key[:, :-1]
        start &= seg != PADDING
        doc_first = torch.ones_like(start)  # [N, T] first token of a tree
        doc_first[:, 1:] = doc[:, 1:] != doc[:, :-1]
        doc_start = torch.where(doc_first, pos, torch.zeros_like(pos)).cummax(dim=1).values  # [N, T]
        # segment length: distance to the next segment start (or the row's real end)
        rows, starts = start.nonzero(as_tuple=True)  # [n_seg], in row-major order
        same_row = torch.roll(rows, -1) == rows  # [n_seg] the next segment is in the same row
        same_row[-1:] = False
        ends = torch.where(same_row, torch.roll(starts, -1), batch.lengths.to(device)[rows])  # [n_seg]
        lengths = ends - starts  # [n_seg]
        is_trunk = seg[rows, starts] == TRUNK  # [n_seg]
        shared_start = batch.shared_start.to(device)[rows, starts]  # [n_seg] a prompt read from an earlier tree
        shared_len = batch.shared_end.to(device)[rows, starts] - shared_start  # [n_seg] (0: none)
        t = (is_trunk & (shared_len == 0)).nonzero().squeeze(1)  # [n_t] trunks holding their own prompt
        trunks = tuple(_causal_group(rows[i], starts[i], lengths[i]) for i in (t[j] for j in buckets(lengths[t])))
        blocks: tuple[_Group, ...] = ()
        for kind in (is_trunk & (shared_len > 0), ~is_trunk):  # trunks reading a shared prompt; summary blocks
            b = kind.nonzero().squeeze(1)  # [n_b]
            prefix_start = doc_start[rows[b], starts[b]]  # [n_b] the block's trunk starts here
            prefix_len = torch.where(is_trunk[b], 0, batch.visible_trunk.to(device)[rows[b], starts[b]] - prefix_start)  # [n_b]
            spans = ((shared_start[b], shared_len[b]), (prefix_start, prefix_len))
            blocks += tuple(
                _block_group(rows[b[j]], starts[b[j]], lengths[b[j]], tuple((at[j], n[j]) for at, n in spans))
                for j in buckets(shared_len[b] + prefix_len + lengths[b])
            )
        return cls(trunks, blocks)


def buckets(lengths: torch.Tensor, ratio: float = BUCKET_RATIO, least: int = BUCKET_LEAST) -> list[torch.Tensor]:
    """Indices of ``lengths [n]`` in buckets of similar lengths, longest first: a bucket ends before the
    first length under ``ratio`` times its longest, once it and what is left hold ``least`` each."""
    order = torch.argsort(lengths, descending=True, stable=True)  # [n]
    ordered = lengths[order].tolist()
    out, start = [], 0
    for i, length in enumerate(ordered):
        if length < ratio * ordered[start] and i - start >= least and len(ordered) - i >= least:
            out.append(order[start:i].sort().values)  # in batch order within a bucket
            start = i
    if ordered:
        out.append(order[start:].sort().values)
    return out


def _causal_group(rows: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> _Group:
    L = int(lengths.max())
    j = torch.arange(L, device=rows.device)  # [L]
    valid = j[None, :] < lengths[:, None]  # [n, L]
    index = starts[:, None] + torch.minimum(j[None, :], lengths[:, None] - 1)  # [n, L]
    return _Group(rows, index, index, valid, None)


def _block_group(
    rows: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, spans: tuple[tuple[torch.Tensor, torch.Tensor], ...]
) -> _Group:
    """Segments that see the row spans ``(start [n], length [n])`` of ``spans`` whole (a shared
    prompt, then a trunk prefix), then themselves causally. Each segment's span keys are laid end
    to end and padded once, to the longest total ``P``."""
    Q = int(lengths.max())
    i = torch.arange(Q, device=rows.device)  # [Q]
    valid = i[None, :] < lengths[:, None]  # [n, Q]
    query_index = starts[:, None] + torch.minimum(i[None, :], lengths[:, None] - 1)  # [n, Q]
    total = sum((n for _, n in spans), torch.zeros_like(lengths))  # [n]
    p = torch.arange(int(total.max()), device=rows.device)[None, :]  # [1, P]
    prefix_index = torch.zeros(p.shape, dtype=torch.long, device=rows.device).expand(lengths.shape[0], -1)  # [n, P]
    before = torch.zeros_like(lengths)  # [n] keys laid down so far
    for span_start, span_len in spans:
        inside = (p >= before[:, None]) & (p < (before + span_len)[:, None])  # [n, P]
        prefix_index = torch.where(inside, span_start[:, None] + p - before[:, None], prefix_index)  # [n, P]
        before = before + span_len
    key_index = torch.cat([prefix_index, query_index], dim=1)  # [n, P + Q]
    sees_prefix = (p < total[:, None])[:, None, :].expand(-1, Q, -1)  # [n, Q, P]
    sees_own = (i[None, None, :] <= i[None, :, None]) & valid[:, None, :]  # [n, Q, Q] causal, real keys
    mask = torch.cat([sees_prefix, sees_own], dim=2)[:, None]  # [n, 1, Q, P + Q]
    return _Group(rows, query_index, key_index, valid, mask)


def _attend(
    group: _Group, tokens_q: torch.Tensor, tokens_k: torch.Tensor, tokens_v: torch.Tensor, width: int, scaling: float | None
) -> torch.Tensor:
    """Outputs of the group's real queries ``[m, H, D]``, from token-major ``[N·T, H, D]`` queries
    and ``[N·T, H_kv, D]`` keys/values (``width`` = T).

    ``index_select`` gathers (their backward is ``index_add``; advanced indexing's backward, an
    accumulating ``index_put``, was the largest cost of this function on the CPU)."""
    n, Q = group.query_index.shape
    K = group.key_index.shape[1]
    base = group.rows[:, None] * width  # [n, 1]
    q = tokens_q.index_select(0, (base + group.query_index).flatten()).unflatten(0, (n, Q)).transpose(1, 2)  # [n, H, Q, D]
    k_flat = (base + group.key_index).flatten()  # [n·K]
    k = tokens_k.index_select(0, k_flat).unflatten(0, (n, K)).transpose(1, 2)  # [n, H_kv, K, D]
    v = tokens_v.index_select(0, k_flat).unflatten(0, (n, K)).transpose(1, 2)  # [n, H_kv, K, D]
    gqa = q.shape[1] != k.shape[1]
    if group.mask is None:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)  # [n, H, Q, D]
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=group.mask, scale=scaling, enable_gqa=gqa)  # [n, H, Q, D]
    return out.transpose(1, 2)[group.valid]  # [m, H, D]


def tree_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    tree_layout: TreeLayout | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: sdpa without a layout; tree attention with one.

    ``query [N, H, T, D]``, ``key``/``value [N, H_kv, T, D]`` → ``[N, T, H, D]``.
    """
    if tree_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if (dropout and module.training) or kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("model.attention=tree: attention dropout, soft-capping and sliding windows are not supported")
    N, H, T, D = query.shape
    # token-major [N·T, heads, D]: how the projections laid the heads out in memory
    tokens_q, tokens_k, tokens_v = (x.transpose(1, 2).reshape(N * T, x.shape[1], D) for x in (query, key, value))
    groups = tree_layout.trunks + tree_layout.blocks
    outputs = [_attend(g, tokens_q, tokens_k, tokens_v, T, scaling) for g in groups]  # each [m, H, D] (the compute dtype)
    where = torch.cat([(g.rows[:, None] * T + g.query_index)[g.valid] for g in groups])  # [Σm] real queries, each once
    values = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # [Σm, H, D]
    out = values.new_zeros(N * T, H, D).index_copy(0, where, values)  # [N·T, H, D], padding stays 0 (one copy, not one per group)
    return out.view(N, T, H, D), None


def placeholder_mask(batch: PackedBatch) -> torch.Tensor:
    """An empty ``[N, 1, 0, 0]`` mask to pass beside a layout: transformers hands 4-D masks to the
    attention layers untouched, so it builds no mask of its own (from restarting position ids it
    would otherwise build a ``[N, 1, T, T]`` document mask for every forward)."""
    return torch.zeros((batch.n_rows, 1, 0, 0), dtype=torch.bool, device=batch.input_ids.device)


def register() -> str:
    """Make ``anytime_tree`` a transformers attention implementation (idempotent); returns its name."""
    AttentionInterface.register(IMPLEMENTATION, tree_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return IMPLEMENTATION
