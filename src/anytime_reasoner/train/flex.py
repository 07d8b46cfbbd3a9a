"""FlexAttention for packed rows (``model.attention=flex``, the CUDA path), compiled a bounded number of times.

transformers' own ``flex_attention`` implementation compiles ``flex_attention`` with static shapes
in training mode (and re-wraps it whenever a module switches between training and evaluation),
and builds a different mask function for plain causal rows than for tree rows. The trainer calls
attention with a new row width T nearly every micro-batch (several trees per row), with and without
gradients, with one row or several: each combination was its own compiled graph, past dynamo's
recompile limit (8) within a few steps, after which flex runs uncompiled and materializes the
``[N, heads, T, T]`` scores (out of memory near T = 10k, or a very slow step).

Here the variants are bounded by construction:

- one compiled ``flex_attention`` (:func:`compiled_flex`, automatic dynamic shapes), called with
  the batch dimension and the row width marked dynamic (:func:`flex_core`), so a new N or T reuses
  the graph: per grad mode one static first graph, one dynamic one, and one for N = 1 (a size-1
  dimension is always specialized);
- every row width rounded up to a multiple of the 128-token block, at least two blocks
  (:func:`flex_width`, applied by ``train.logprobs.packed_logprobs``), so one-block masks never
  occur and the block counts stay dynamic;
- one mask function for every call: the tree rule (``train.masks.flex_block_mask``), causal
  rows included (the rule without blocks is causal attention within a tree);
- dynamo's recompile limit raised to :data:`RECOMPILE_LIMIT` when the implementation is
  registered, well above the ~6 variants of a run.

``tests/train/test_flex.py`` counts the compiles over a sweep of micro-batch shapes on the CPU
(no-grad: FlexAttention has no backward there) and checks the forward against the dense mask.

How it plugs into transformers: registered as ``anytime_flex`` with sdpa's mask builder. An
attention call that receives a FlexAttention ``BlockMask`` runs :func:`flex_core`; any other call
(generation, evaluation, a plain mask) runs sdpa, uncompiled, so a model loaded for training still
generates at sdpa's speed. Attention dropout, logit soft-capping and sliding windows are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

IMPLEMENTATION = "anytime_flex"
FLEX_BLOCK = 128  # FlexAttention's block (tokens)
MIN_BLOCKS = 2  # one-block masks would be a specialized graph of their own
RECOMPILE_LIMIT = 32  # dynamo's per-function limit while flex is in use (its default is 8)

BLOCK_MASK_TENSORS = (
    "kv_num_blocks",
    "kv_indices",
    "full_kv_num_blocks",
    "full_kv_indices",
    "q_num_blocks",
    "q_indices",
    "full_q_num_blocks",
    "full_q_indices",
)

FlexFn = Callable[..., torch.Tensor]


def flex_width(width: int) -> int:
    """The row width FlexAttention runs at: ``width`` rounded up to a multiple of 128, at least 256."""
    blocks = max(MIN_BLOCKS, -(-width // FLEX_BLOCK))
    return blocks * FLEX_BLOCK


@functools.cache
def compiled_flex(device_type: str) -> FlexFn:
    """``flex_attention`` compiled once per process for CUDA (automatic dynamic shapes; memoized
    because dynamo's graph cache belongs to the process anyway); on the CPU, where there is no
    backward and only tests run it, the uncompiled function."""
    if device_type != "cuda":
        return flex_attention
    return torch.compile(flex_attention, dynamic=None)


def _mark_dynamic(tensor: torch.Tensor, dims: range | tuple[int, ...]) -> None:
    for dim in dims:
        if tensor.shape[dim] > 1:  # a size-1 dimension stays specialized (N = 1 is its own graph)
            torch._dynamo.maybe_mark_dynamic(tensor, dim)


def flex_core(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_mask: BlockMask, scaling: float | None, fn: FlexFn
) -> torch.Tensor:
    """``fn`` (a compiled ``flex_attention``) with N and T marked dynamic on every input, the block
    mask's index tensors and the tensors its mask function reads included.

    ``query [N, H, T, D]``, ``key``/``value [N, H_kv, T, D]`` → ``[N, T, H, D]``."""
    for tensor in (query, key, value):
        _mark_dynamic(tensor, (0, 2))
    for name in BLOCK_MASK_TENSORS:
        index = getattr(block_mask, name, None)
        if isinstance(index, torch.Tensor):
            _mark_dynamic(index, range(index.dim()))
    for cell in getattr(block_mask.mask_mod, "__closure__", None) or ():
        if isinstance(cell.cell_contents, torch.Tensor):  # segment, visible-trunk and document ids [N, T]
            _mark_dynamic(cell.cell_contents, range(cell.cell_contents.dim()))
    gqa = query.shape[1] != key.shape[1]
    out = fn(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=gqa)  # [N, H, T, D]
    return out.transpose(1, 2).contiguous()  # [N, T, H, D]


def flex_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: FlexAttention for a ``BlockMask``, sdpa for anything else."""
    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if (dropout and module.training) or kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("model.attention=flex: attention dropout, soft-capping and sliding windows are not supported")
    return flex_core(query, key, value, attention_mask, scaling, compiled_flex(query.device.type)), None


def register() -> str:
    """Make ``anytime_flex`` a transformers attention implementation (idempotent) and raise dynamo's
    recompile limit to :data:`RECOMPILE_LIMIT`; returns the implementation's name."""
    AttentionInterface.register(IMPLEMENTATION, flex_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return IMPLEMENTATION
