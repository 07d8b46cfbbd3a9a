"""Prefixes the engine already holds: the KV cache one sampling call leaves for the next.

The anytime rollout samples G thinkings, then summaries after cuts of them: each summary prefix is
``prompt + thinking[:cut] + inserted``, and all but its last few tokens went through the model while
the thinking was sampled. With ``SamplingParams(keep_cache=True)`` :class:`~anytime_reasoner.engine.hf.TransformersEngine`
keeps each decoding call's cache (:class:`HeldRows`, up to its ``max_held_bytes``); the next call
looks every prefix up (:meth:`HeldIndex.find`: the held row with the same prompt and the longest
common continuation), gathers the held keys and values of the shared part (:func:`fork`) and runs
only the rest (the inserted text) through the model; a chunk of prefixes not all held is encoded as
usual. The next call consumes what is held, hit or miss, so nothing stays held across a training
update. This is what vLLM's automatic prefix caching does for its engine; it replaces the
summary phase's re-encoding of every cut (docs/ALGORITHM.md §3.4).

Layout of a forked row: ``[left padding | the held head | the rest]``, the heads right-aligned at the
longest one and the rests left-padded among themselves; the attention mask is 0 on padding and the
position ids are counted over real tokens (``engine.decode.position_ids``), so the model sees the same
sequence, at the same positions, as a plain left-padded prefix.

Departure from re-encoding: the held keys and values were computed one token at a time while
decoding, those of a re-encoding in one forward over the whole prefix; they agree to float rounding
(tests/engine/test_prefix_cache.py: the same greedy tokens, log-probs within 1e-4), so a sampled
summary can differ where a draw falls on a rounding edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from anytime_reasoner.engine.decode import ReservedLayer, cache_kwarg, position_ids
from anytime_reasoner.engine.held_attention import HeldKV


@dataclass(frozen=True)
class HeldRows:
    """The cache of one decoding call: ``ids [r, W]`` (the left-padded prefixes, width ``width``,
    then the sampled tokens), ``prefixes`` (each row's prefix, unpadded) and ``cache``, whose layers
    hold positions ``[0, W - 1)`` (the last sampled token never ran)."""

    ids: torch.Tensor  # [r, W]
    width: int  # T: the prefix width
    prefixes: tuple[tuple[int, ...], ...]
    cache: Any  # a transformers Cache of plain attention layers, [r, H, >= W - 1, D] each

    @property
    def filled(self) -> int:
        return self.ids.shape[1] - 1

    @property
    def nbytes(self) -> int:
        """Bytes of the held keys and values (their reserved buffers)."""
        return sum(t.numel() * t.element_size() for layer in self.cache.layers for t in (layer.key_buffer, layer.value_buffer))


@dataclass(frozen=True)
class Hit:
    """Where a prefix's first ``reused`` tokens are held: ``held[source].cache`` row ``row``,
    positions ``[0, kept)`` (the row's left padding included)."""

    source: int
    row: int
    reused: int
    kept: int


class HeldIndex:
    """Look prefixes up among held rows: by prompt first (a dict), then by the longest common
    continuation among that prompt's rows (a tensor comparison). Among rows sharing as much with a
    prefix, the one found least often so far is taken: thinkings that begin alike then still each serve
    their own cuts, so every held row is read by about as many summaries (``engine/held_attention``
    stacks a row's readers)."""

    def __init__(self, held: Sequence[HeldRows]) -> None:
        self.held = held
        self.rows: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for s, h in enumerate(held):
            for r, prefix in enumerate(h.prefixes):
                self.rows.setdefault(prefix, []).append((s, r))
        self.lengths = sorted({len(p) for p in self.rows}, reverse=True)
        self.host_ids = [h.ids.cpu().numpy() for h in held]  # [r, W] each, matched on the host (a few small arrays a prefix)
        self.found = [np.zeros(len(h.prefixes), dtype=np.int64) for h in held]  # [r] each: hits so far per row

    def find(self, query: Sequence[int]) -> Hit | None:
        """The held row sharing the longest head with ``query`` (at least its prompt), keeping at
        least one token of ``query`` to run; None if no held prompt starts ``query``."""
        for length in self.lengths:
            if length >= len(query):
                continue
            candidates = self.rows.get(tuple(query[:length]))
            if candidates:
                hits = [self._best(s, rows, query, length) for s, rows in _by_source(candidates)]
                hit = max(hits, key=lambda h: (h.reused, -int(self.found[h.source][h.row])))
                self.found[hit.source][hit.row] += 1
                return hit
        return None

    def _best(self, source: int, rows: list[int], query: Sequence[int], prompt: int) -> Hit:
        """The row of ``rows`` (of ``held[source]``, all with this prompt) whose continuation shares most with ``query``."""
        h = self.held[source]
        sampled = self.host_ids[source][rows, h.width : h.filled]  # [c, filled - T] the held continuations
        rest = np.asarray(query[prompt : prompt + sampled.shape[1]], dtype=sampled.dtype)  # [m]
        common = np.cumprod(sampled[:, : rest.size] == rest, axis=1).sum(1)  # [c]
        found = self.found[source][rows]  # [c]
        best = int(np.argmax(common * (int(found.max()) + 1) - found))  # the longest head, then the least found
        reused = min(prompt + int(common[best]), len(query) - 1)
        return Hit(source, rows[best], reused, h.width - prompt + reused)


def _by_source(candidates: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """``(source, row)`` pairs grouped by source."""
    groups: dict[int, list[int]] = {}
    for source, row in candidates:
        groups.setdefault(source, []).append(row)
    return list(groups.items())


def fork(
    model: Any, held: Sequence[HeldRows], hits: Sequence[Hit], queries: Sequence[Sequence[int]], pad_id: int, new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Prefixes ``queries`` (one :class:`Hit` each) as ``ids [k, W + U]``, ``mask [k, W + U]`` and a cache
    holding positions ``[0, W + U - 1)``, the form :func:`~anytime_reasoner.engine.decode.decode` takes:
    ``W`` the longest reused head, ``U`` the longest rest, whose tokens but the last are run here in one
    forward. The cache's layers are :class:`~anytime_reasoner.engine.decode.ReservedLayer` with room for
    ``new_tokens`` more: the heads are copied once, into place, and the rests written in place."""
    rests = [list(q[h.reused :]) for q, h in zip(queries, hits, strict=True)]
    extra = max(len(r) for r in rests)  # U
    ids, mask, layers = _gather(held, hits, pad_id, extra + new_tokens)  # [k, W], [k, W], [k, H, W + U + new, D] each
    rest_ids = torch.full((len(rests), extra), pad_id, dtype=ids.dtype, device=ids.device)  # [k, U]
    rest_mask = torch.zeros_like(rest_ids)  # [k, U]
    for i, rest in enumerate(rests):
        rest_ids[i, extra - len(rest) :] = torch.tensor(rest, dtype=ids.dtype)
        rest_mask[i, extra - len(rest) :] = 1
    width = ids.shape[1]
    ids, mask = torch.cat([ids, rest_ids], dim=1), torch.cat([mask, rest_mask], dim=1)  # [k, W + U]
    cache = DynamicCache()
    cache.layers = [ReservedLayer.reserved(keys, values, width) for keys, values in layers]
    if extra > 1:
        head = mask[:, :-1]  # [k, W + U - 1]
        positions = position_ids(head)[:, width:]  # [k, U - 1]
        model(
            input_ids=ids[:, width:-1], attention_mask=head, position_ids=positions, use_cache=True, **{cache_kwarg(model): cache}
        )
    return ids, mask, cache


def _gather(
    held: Sequence[HeldRows], hits: Sequence[Hit], pad_id: int, room: int
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The reused heads of every hit, left-padded to ``W = max reused``: ids ``[k, W]``, mask, and each
    layer's keys and values in buffers of ``W + room`` positions (held position ``kept - reused + i``
    of a row goes to ``W - reused + i``; a key carries its position in its rotary embedding, so where
    it sits in the cache does not matter)."""
    width = max(h.reused for h in hits)
    device = held[hits[0].source].ids.device
    ids = torch.full((len(hits), width), pad_id, dtype=torch.long, device=device)  # [k, W]
    reused = torch.tensor([h.reused for h in hits], device=device)  # [k]
    mask = (torch.arange(width, device=device)[None, :] >= width - reused[:, None]).long()  # [k, W]
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    for s in sorted({h.source for h in hits}):
        src, at = held[s], [i for i, h in enumerate(hits) if h.source == s]
        rows = torch.tensor([hits[i].row for i in at], device=device)  # [k_s]
        shift = torch.tensor([hits[i].kept - width for i in at], device=device)  # [k_s]
        where = (torch.arange(width, device=device)[None, :] + shift[:, None]).clamp(min=0)  # [k_s, W] held positions
        rows_at = torch.tensor(at, device=device)
        ids[rows_at] = torch.where(mask[rows_at].bool(), src.ids[rows].gather(1, where), pad_id)
        for n, layer in enumerate(src.cache.layers):
            if len(layers) <= n:
                layers.append(
                    tuple(t.new_zeros(len(hits), t.shape[1], width + room, t.shape[3]) for t in (layer.keys, layer.values))
                )
            for held_kv, out in zip((layer.keys, layer.values), layers[n], strict=True):
                index = where[:, None, :, None].expand(-1, held_kv.shape[1], -1, held_kv.shape[3])  # [k_s, H, W, D]
                out[rows_at, :, :width] = held_kv[rows].gather(2, index)
    return ids, mask, layers


def held_heads(held: Sequence[HeldRows], hits: Sequence[Hit], device: torch.device) -> tuple[HeldKV, torch.Tensor]:
    """The held rows ``hits`` read, each gathered once (``engine/held_attention``: the summaries then
    read them in place), and each hit's entry among them ``[k]``."""
    rows = sorted({(h.source, h.row) for h in hits})
    entry_of = {row: i for i, row in enumerate(rows)}
    entry = torch.tensor([entry_of[(h.source, h.row)] for h in hits], device=device)  # [k]
    width = max(h.kept for h in hits)  # P
    start = torch.tensor([held[s].width - len(held[s].prefixes[r]) for s, r in rows], device=device)  # [n] left padding
    layers = []
    for n in range(len(held[rows[0][0]].cache.layers)):
        pair = []
        for side in ("keys", "values"):
            first = getattr(held[rows[0][0]].cache.layers[n], side)  # [r, H_kv, filled, D]
            out = first.new_zeros(len(rows), first.shape[1], width, first.shape[3])  # [n, H_kv, P, D]
            for s in sorted({s for s, _ in rows}):
                at = [i for i, (source, _) in enumerate(rows) if source == s]
                tensor = getattr(held[s].cache.layers[n], side)  # [r_s, H_kv, filled_s, D]
                filled = min(width, tensor.shape[2])
                picked = torch.tensor([rows[i][1] for i in at], device=device)
                out[torch.tensor(at, device=device), :, :filled] = tensor[:, :, :filled].index_select(0, picked)
            pair.append(out)
        layers.append((pair[0], pair[1]))
    return HeldKV(tuple(layers), start), entry
