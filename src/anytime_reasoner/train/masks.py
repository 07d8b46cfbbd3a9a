"""The attention masks of packed rows (docs/ALGORITHM.md §7): the tree rule of
:mod:`anytime_reasoner.train.packing`, materialized.

Query q may attend key k iff ``(seg[k] == seg[q] and k ≤ q) or (seg[k] == 0 and k < visible_trunk[q])``,
within one tree (``doc[k] == doc[q]``), or k lies in the prompt q's tree shares with an earlier tree
of the row (``shared_start[q] ≤ k < shared_end[q]``). :func:`dense_attention_mask` is the additive float
``[N, 1, T, T]`` mask of eager/sdpa attention; :func:`flex_block_mask` the FlexAttention
``BlockMask`` of the same rule (CUDA); ``train.tree_attention`` computes only the allowed pairs
without either.
"""

from __future__ import annotations

import torch

from anytime_reasoner.train.packing import TRUNK, PackedBatch


def allowed_attention(
    segment_ids: torch.Tensor,
    visible_trunk: torch.Tensor,
    doc_ids: torch.Tensor | None = None,
    shared: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Dense visibility: ``[N, T]`` per-token arrays (``shared``: ``shared_start``, ``shared_end``)
    → bool ``[N, T(query), T(key)]``."""
    T = segment_ids.shape[1]
    pos = torch.arange(T, device=segment_ids.device)  # [T]
    causal = pos[None, :, None] >= pos[None, None, :]  # [1, T, T] key <= query
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [N, T, T]
    trunk_key = (segment_ids == TRUNK)[:, None, :]  # [N, 1, T]
    in_prefix = pos[None, None, :] < visible_trunk[:, :, None]  # [N, T, T]
    allowed = (same & causal) | (trunk_key & in_prefix)  # [N, T, T]
    if doc_ids is not None:
        allowed &= doc_ids[:, :, None] == doc_ids[:, None, :]  # [N, T, T] within one tree
    if shared is not None:
        start, end = shared
        allowed |= (pos[None, None, :] >= start[:, :, None]) & (pos[None, None, :] < end[:, :, None])  # [N, T, T]
    return allowed


def dense_attention_mask(batch: PackedBatch, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive ``[N, 1, T, T]`` mask (0 where allowed, ``finfo(dtype).min`` elsewhere).

    transformers 5.x passes a 4-D mask through unchanged (``_preprocess_mask_arguments``); the
    eager kernel *adds* it to the scores (a bool mask would be wrong there) and sdpa accepts an
    additive float mask too, so the float form works for both.
    """
    allowed = allowed_attention(
        batch.segment_ids, batch.visible_trunk, batch.doc_ids, (batch.shared_start, batch.shared_end)
    )  # [N, T, T]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)  # [N, T, T]
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # [N, 1, T, T]


def tree_mask_mod(
    segment_ids: torch.Tensor,
    visible_trunk: torch.Tensor,
    doc_ids: torch.Tensor,
    shared_start: torch.Tensor,
    shared_end: torch.Tensor,
):
    """FlexAttention ``mask_mod(b, h, q, k)`` for the same rule as :func:`allowed_attention`."""

    def mask_mod(b, h, q_idx, kv_idx):
        seg_q = segment_ids[b, q_idx]
        seg_k = segment_ids[b, kv_idx]
        own = (seg_q == seg_k) & (kv_idx <= q_idx)
        prefix = (seg_k == TRUNK) & (kv_idx < visible_trunk[b, q_idx])
        shared = (kv_idx >= shared_start[b, q_idx]) & (kv_idx < shared_end[b, q_idx])
        return ((own | prefix) & (doc_ids[b, q_idx] == doc_ids[b, kv_idx])) | shared

    return mask_mod


def flex_block_mask(batch: PackedBatch, block_size: int = 128, compile_mask: bool | None = None):
    """A FlexAttention ``BlockMask`` ``[N, 1, T, T]`` on the batch's device.

    ``compile_mask`` (default: on CUDA) builds the mask with ``torch.compile`` instead of
    materializing ``[N, T, T]`` booleans.
    """
    from torch.nn.attention.flex_attention import create_block_mask  # heavy: FlexAttention (and its compiler) on use

    device = batch.segment_ids.device
    if compile_mask is None:
        compile_mask = device.type == "cuda"
    N, T = batch.segment_ids.shape
    return create_block_mask(
        tree_mask_mod(batch.segment_ids, batch.visible_trunk, batch.doc_ids, batch.shared_start, batch.shared_end),
        N,
        None,
        T,
        T,
        device=device,
        BLOCK_SIZE=block_size,
        _compile=compile_mask,
    )
