"""Tree-packed training rows: one row per thinking with all its summaries (docs/ALGORITHM.md §7).

A row is ``prompt + thinking + [inserted_1 + summary_1] + … + [inserted_k + summary_k]`` with
k = S·A blocks in (budget, sample) order: block ``i = s·A + a + 1``. The rollout structure is
described per token by a few integer arrays, from which both attention masks are built:

- ``segment_ids``: 0 for the trunk (prompt + thinking), i ≥ 1 for block i, −1 for padding;
- ``visible_trunk``: for a token of block i, ``|prompt| + cut_i`` (how many trunk tokens it sees);
  0 for trunk and padding tokens;
- ``position_ids``: 0… along the trunk; block i restarts at ``|prompt| + cut_i``;
- ``prev_index``: the row index of the token whose output predicts this token (−1 when none).
  Along the trunk and inside a block it is ``t − 1``; the first token of block i is predicted
  by the last trunk token it sees, ``|prompt| + cut_i − 1`` — not by ``t − 1``, which is the end
  of the previous block. Log-probs gather their hidden states through this index.

Query q may attend key k iff ``(seg[k] == seg[q] and k ≤ q) or (seg[k] == 0 and k < visible_trunk[q])``:
the trunk is causal, a block sees its trunk prefix and itself causally, padding sees only padding
(never an empty row, so no NaN). ``train.masks`` materializes this rule as an additive float
``[N, 1, T, T]`` mask (eager/sdpa) or a FlexAttention ``BlockMask`` (CUDA);
``train.tree_attention`` computes only the pairs it allows.

Several trees per row (:func:`merge_rows`, what the update runs): ``doc_ids`` numbers the trees
of a row (0, 1, …; −1 padding), the rule above holds within a tree (``doc[k] == doc[q]``), and
every tree keeps its own position ids (restarting at 0) while ``prev_index`` and ``visible_trunk``
are shifted by the tree's offset in the row. The trees are placed first-fit
(:func:`first_fit_bins`) into rows of a capacity the update chooses (``train.update``), so padding
is what no tree fits into.

Shared prompts (``ppo.share_prompts``): the G thinkings of a question start with the same prompt,
which in a GRPO batch of short responses is about half of all tokens. Trees of one prompt are placed
into a row together (:func:`first_fit_bins` with groups) and only the first keeps its prompt; a later
tree starts with its thinking and reads the first's prompt: its tokens carry that span as
``shared_start``/``shared_end``, and the rule above gains ``or shared_start[q] ≤ k < shared_end[q]``
(across trees). Its position ids are unchanged (its thinking starts at ``|prompt|``), and its first
thinking token (a block cut at 0 too) is predicted by the lender's last prompt token, whose hidden
state is the one its own copy would have had: the log-probs are those of the unshared rows.
This goes beyond the seed, which packed one tree (one prompt copy) per thinking.

Engine log-probs: ``rollout_logprobs`` holds, for every sampled token, the log-prob the engine
reported when it sampled it (``Thinking.thinking_logprobs``, ``Summary.sampled_logprobs``), and
NaN elsewhere or when the engine reported none; the update compares them with its own old
log-probs (``algo.off_policy``).

Training targets: thinking token p (0-based) belongs to segment s with ``b_{s-1} < p + 1 ≤ b_s``
and gets ``thinking_advantages[b, g, s]``; the sampled tokens of summary (s, a) get
``summary_advantages[b, g, s, a]``; prompt, inserted tokens and padding get 0 and are not trainable.

:func:`unpack_rollouts` builds the same training data without the tree: one plain causal row for
``prompt + thinking`` and one per summary ``prompt + thinking[:cut] + inserted + summary`` (used to
check equivalence and to measure what packing saves).

Departure from the seed: the seed padded each tree to a multiple of the 128-token FlexAttention block
at rollout and concatenated a micro-batch's trees into one row padded to a static length; here trees
are not padded, rows hold several trees first-fit (:func:`merge_rows`) and are right-padded to the
longest row of a (micro-)batch, and only the FlexAttention path rounds that width up to whole blocks
(``train.flex``, to bound its compiled variants).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from anytime_reasoner.config import RolloutConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking

TRUNK = 0
PADDING = -1
NAN = float("nan")


@dataclass
class PackedBatch:
    """Right-padded training rows. N rows, T = longest row.

    A packed batch has one row per thinking (``rollout_index`` unique); an unpacked one has
    ``1 + S·A`` plain causal rows per thinking. Every tensor lives on the same device.
    """

    input_ids: torch.Tensor  # [N, T] int64, padding = pad_token_id
    position_ids: torch.Tensor  # [N, T] int64, padding = 0
    segment_ids: torch.Tensor  # [N, T] int64: 0 trunk, i >= 1 block i, -1 padding
    visible_trunk: torch.Tensor  # [N, T] int64: block tokens |prompt| + cut_i, else 0
    prev_index: torch.Tensor  # [N, T] int64: row index of the predicting token, -1 if none
    doc_ids: torch.Tensor  # [N, T] int64: which tree of the row (0, 1, …), -1 padding
    shared_start: torch.Tensor  # [N, T] int64: row span [shared_start, shared_end) of a prompt this
    shared_end: torch.Tensor  # [N, T] int64: token's tree shares with an earlier tree (empty: its own)
    trainable_mask: torch.Tensor  # [N, T] bool: sampled thinking and summary tokens
    advantages: torch.Tensor  # [N, T] float32, 0 where not trainable
    rollout_logprobs: torch.Tensor  # [N, T] float32: the engine's log-prob of each sampled token, NaN if none
    lengths: torch.Tensor  # [N] int64 real (unpadded) length of each row
    prompt_lengths: torch.Tensor  # [N] int64 (a row of several trees: its first tree's)
    question_index: torch.Tensor  # [N] int64: b, the question of the row (of its first tree)
    rollout_index: torch.Tensor  # [N] int64: b·G + g, the thinking the row trains (its first tree)

    @property
    def n_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_rollouts(self) -> int:
        return int(torch.unique(self.rollout_index).numel())

    @property
    def is_causal(self) -> bool:
        """True when no row has summary blocks or a second tree: a plain causal mask is exact."""
        return not bool((self.segment_ids > TRUNK).any() or (self.doc_ids > 0).any())

    @property
    def shares_prompts(self) -> bool:
        """True when some tree reads its prompt from another tree of its row (:func:`merge_rows`)."""
        return bool((self.shared_end > self.shared_start).any())

    @property
    def response_lengths(self) -> torch.Tensor:
        """``[N]`` tokens after the prompt in each row."""
        return self.lengths - self.prompt_lengths

    def select(self, rows: torch.Tensor | Sequence[int]) -> PackedBatch:
        """The given rows, with padding trimmed to their longest row."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)  # [n]
        width = int(self.lengths[rows].max()) if rows.numel() else 0
        out: dict[str, torch.Tensor] = {}
        for f in fields(self):
            value = getattr(self, f.name)[rows]
            out[f.name] = value[:, :width] if value.dim() == 2 else value
        return PackedBatch(**out)

    def padded_to(self, width: int, pad_token_id: int = 0) -> PackedBatch:
        """The same rows right-padded to ``width`` columns (padding: segment and document −1, not
        trainable, no predecessor; no real token attends to it); ``width`` below the current width
        is an error."""
        extra = width - self.width
        if extra < 0:
            raise ValueError(f"padded_to: width {width} is below the batch's {self.width}")
        if extra == 0:
            return self
        fill = {
            "segment_ids": PADDING,
            "doc_ids": PADDING,
            "prev_index": -1,
            "rollout_logprobs": NAN,
            "input_ids": pad_token_id,
        }
        out: dict[str, torch.Tensor] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value.dim() == 2:
                pad = value.new_full((value.shape[0], extra), fill.get(f.name, 0))
                value = torch.cat([value, pad], dim=1)
            out[f.name] = value
        return PackedBatch(**out)

    def to(self, device: torch.device | str) -> PackedBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def empty_batch() -> PackedBatch:
    """No rows (``[0, 0]`` tensors): what a rank trains on when a step has fewer questions than ranks."""
    grid = torch.zeros(0, 0, dtype=torch.long)
    return PackedBatch(
        input_ids=grid,
        position_ids=grid,
        segment_ids=grid,
        visible_trunk=grid,
        prev_index=grid,
        doc_ids=grid,
        shared_start=grid,
        shared_end=grid,
        trainable_mask=grid.bool(),
        advantages=grid.float(),
        rollout_logprobs=grid.float(),
        lengths=torch.zeros(0, dtype=torch.long),
        prompt_lengths=torch.zeros(0, dtype=torch.long),
        question_index=torch.zeros(0, dtype=torch.long),
        rollout_index=torch.zeros(0, dtype=torch.long),
    )


# ---------------------------------------------------------------------------------------------
# Building rows
# ---------------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One row as Python lists (before padding)."""

    input_ids: list[int]
    position_ids: list[int]
    segment_ids: list[int]
    visible_trunk: list[int]
    prev_index: list[int]
    trainable: list[bool]
    advantages: list[float]
    rollout_logprobs: list[float]
    prompt_length: int
    question: int
    rollout: int

    @property
    def doc_ids(self) -> list[int]:
        return [0] * len(self.input_ids)

    @property
    def shared_start(self) -> list[int]:
        return [0] * len(self.input_ids)

    @property
    def shared_end(self) -> list[int]:
        return [0] * len(self.input_ids)


def _trunk_row(t: Thinking, budgets: Sequence[int], think_adv: Sequence[float], question: int, rollout: int) -> _Row:
    """``prompt + thinking``; thinking token p gets the advantage of its budget segment."""
    n_prompt, n_think = len(t.prompt_ids), t.length
    n = n_prompt + n_think
    segments = [bisect_left(budgets, p + 1) for p in range(n_think)]  # b_{s-1} < p+1 <= b_s
    return _Row(
        input_ids=list(t.prompt_ids) + list(t.thinking_ids),
        position_ids=list(range(n)),
        segment_ids=[TRUNK] * n,
        visible_trunk=[0] * n,
        prev_index=list(range(-1, n - 1)),
        trainable=[False] * n_prompt + [True] * n_think,
        advantages=[0.0] * n_prompt + [float(think_adv[s]) for s in segments],
        rollout_logprobs=[NAN] * n_prompt + _or_nan(t.thinking_logprobs, n_think),
        prompt_length=n_prompt,
        question=question,
        rollout=rollout,
    )


def _or_nan(logprobs: Sequence[float] | None, n: int) -> list[float]:
    """The engine's ``n`` log-probs, or NaN for each token when it gave none."""
    if logprobs is None:
        return [NAN] * n
    if len(logprobs) != n:
        raise ValueError(f"engine log-probs: {len(logprobs)} values for {n} sampled tokens")
    return [float(x) for x in logprobs]


def _append_block(
    row: _Row,
    segment: int,
    visible: int,
    inserted: Sequence[int],
    sampled: Sequence[int],
    adv: float,
    logprobs: Sequence[float] | None = None,
) -> None:
    """Append ``inserted + sampled`` as block ``segment`` seeing the first ``visible`` trunk tokens."""
    start = len(row.input_ids)
    ids = list(inserted) + list(sampled)
    row.input_ids += ids
    row.position_ids += [visible + j for j in range(len(ids))]
    row.segment_ids += [segment] * len(ids)
    row.visible_trunk += [visible] * len(ids)
    if ids:  # the first token is predicted by the last visible trunk token, the rest by t - 1
        row.prev_index += [visible - 1] + [start + j for j in range(len(ids) - 1)]
    row.trainable += [False] * len(inserted) + [True] * len(sampled)
    row.advantages += [0.0] * len(inserted) + [float(adv)] * len(sampled)
    row.rollout_logprobs += [NAN] * len(inserted) + _or_nan(logprobs, len(sampled))


def _check_thinking(t: Thinking, budgets: Sequence[int], n_summary: int, where: str) -> None:
    S = len(budgets)
    if not t.prompt_ids:
        raise ValueError(f"{where}: empty prompt; the first thinking token needs a predecessor")
    if t.length > budgets[-1]:
        raise ValueError(f"{where}: thinking of {t.length} tokens exceeds the largest budget {budgets[-1]}")
    if len(t.cuts) != S or len(t.summaries) != S:
        raise ValueError(f"{where}: expected {S} cuts and {S} summary lists, got {len(t.cuts)} and {len(t.summaries)}")
    for s, (cut, per_budget) in enumerate(zip(t.cuts, t.summaries, strict=False)):
        if not 0 <= cut <= t.length:
            raise ValueError(f"{where}: cut {s} = {cut} outside [0, {t.length}]")
        if len(per_budget) != n_summary:
            raise ValueError(f"{where}: budget {s} has {len(per_budget)} summaries, expected {n_summary}")


def _check_advantages(batch: RolloutBatch, thinking_advantages: torch.Tensor, summary_advantages: torch.Tensor) -> None:
    B, G, S, A = batch.shape
    if tuple(thinking_advantages.shape) != (B, G, S):
        raise ValueError(f"thinking_advantages: expected shape {(B, G, S)}, got {tuple(thinking_advantages.shape)}")
    if tuple(summary_advantages.shape) != (B, G, S, A):
        raise ValueError(f"summary_advantages: expected shape {(B, G, S, A)}, got {tuple(summary_advantages.shape)}")


def packed_rows(batch: RolloutBatch, thinking_advantages: torch.Tensor, summary_advantages: torch.Tensor) -> list[_Row]:
    """One tree-packed row per thinking, in (b, g) order."""
    _check_advantages(batch, thinking_advantages, summary_advantages)
    B, G, S, A = batch.shape
    think_adv = thinking_advantages.detach().cpu().tolist()  # [B][G][S]
    summ_adv = summary_advantages.detach().cpu().tolist()  # [B][G][S][A]
    rows = []
    for b, per_question in enumerate(batch.thinkings):
        for g, t in enumerate(per_question):
            _check_thinking(t, batch.budgets, A, where=f"thinking[{b}][{g}]")
            row = _trunk_row(t, batch.budgets, think_adv[b][g], question=b, rollout=b * G + g)
            for s in range(S):
                visible = len(t.prompt_ids) + t.cuts[s]
                for a, summary in enumerate(t.summaries[s]):
                    _append_block(
                        row,
                        s * A + a + 1,
                        visible,
                        summary.inserted_ids,
                        summary.sampled_ids,
                        summ_adv[b][g][s][a],
                        summary.sampled_logprobs,
                    )
            rows.append(row)
    return rows


def unpacked_rows(batch: RolloutBatch, thinking_advantages: torch.Tensor, summary_advantages: torch.Tensor) -> list[_Row]:
    """Per thinking: ``prompt + thinking``, then one causal row per summary (s, a) in order."""
    _check_advantages(batch, thinking_advantages, summary_advantages)
    B, G, S, A = batch.shape
    think_adv = thinking_advantages.detach().cpu().tolist()  # [B][G][S]
    summ_adv = summary_advantages.detach().cpu().tolist()  # [B][G][S][A]
    rows = []
    for b, per_question in enumerate(batch.thinkings):
        for g, t in enumerate(per_question):
            _check_thinking(t, batch.budgets, A, where=f"thinking[{b}][{g}]")
            trunk = _trunk_row(t, batch.budgets, think_adv[b][g], question=b, rollout=b * G + g)
            rows.append(trunk)
            for s in range(S):
                visible = len(t.prompt_ids) + t.cuts[s]
                for a, summary in enumerate(t.summaries[s]):
                    rows.append(_causal_summary_row(trunk, visible, summary, summ_adv[b][g][s][a]))
    return rows


def _causal_summary_row(trunk: _Row, visible: int, summary: Summary, adv: float) -> _Row:
    """``trunk[:visible] + inserted + sampled`` as a plain causal row; only ``sampled`` trains."""
    inserted, sampled = summary.inserted_ids, summary.sampled_ids
    ids = trunk.input_ids[:visible] + list(inserted) + list(sampled)
    n = len(ids)
    n_untrained = visible + len(inserted)
    return _Row(
        input_ids=ids,
        position_ids=list(range(n)),
        segment_ids=[TRUNK] * n,
        visible_trunk=[0] * n,
        prev_index=list(range(-1, n - 1)),
        trainable=[False] * n_untrained + [True] * len(sampled),
        advantages=[0.0] * n_untrained + [float(adv)] * len(sampled),
        rollout_logprobs=[NAN] * n_untrained + _or_nan(summary.sampled_logprobs, len(sampled)),
        prompt_length=trunk.prompt_length,
        question=trunk.question,
        rollout=trunk.rollout,
    )


def collate_rows(rows: Sequence[_Row], pad_token_id: int = 0) -> PackedBatch:
    """Right-pad rows into a :class:`PackedBatch` (padding: segment −1, not trainable)."""
    if not rows:
        raise ValueError("rows: nothing to collate")
    T = max(len(r.input_ids) for r in rows)  # row width after padding

    def pad(name: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([getattr(r, name) + [value] * (T - len(r.input_ids)) for r in rows], dtype=dtype)  # [N, T]

    return PackedBatch(
        input_ids=pad("input_ids", pad_token_id, torch.long),
        position_ids=pad("position_ids", 0, torch.long),
        segment_ids=pad("segment_ids", PADDING, torch.long),
        visible_trunk=pad("visible_trunk", 0, torch.long),
        prev_index=pad("prev_index", -1, torch.long),
        doc_ids=pad("doc_ids", PADDING, torch.long),
        shared_start=pad("shared_start", 0, torch.long),
        shared_end=pad("shared_end", 0, torch.long),
        trainable_mask=pad("trainable", False, torch.bool),
        advantages=pad("advantages", 0.0, torch.float32),
        rollout_logprobs=pad("rollout_logprobs", NAN, torch.float32),
        lengths=torch.tensor([len(r.input_ids) for r in rows], dtype=torch.long),  # [N]
        prompt_lengths=torch.tensor([r.prompt_length for r in rows], dtype=torch.long),  # [N]
        question_index=torch.tensor([r.question for r in rows], dtype=torch.long),  # [N]
        rollout_index=torch.tensor([r.rollout for r in rows], dtype=torch.long),  # [N]
    )


def pack_rollouts(
    batch: RolloutBatch,
    thinking_advantages: torch.Tensor,
    summary_advantages: torch.Tensor,
    pad_token_id: int = 0,
) -> PackedBatch:
    """Tree-packed rows, one per thinking (N = B·G).

    Args:
        batch: the rollouts (B questions, G thinkings, S cuts, A summaries per cut).
        thinking_advantages: ``[B, G, S]`` per-segment advantages.
        summary_advantages: ``[B, G, S, A]`` per-summary advantages.
        pad_token_id: any valid id; padding is masked out of attention and training.
    """
    return collate_rows(packed_rows(batch, thinking_advantages, summary_advantages), pad_token_id)


def unpack_rollouts(
    batch: RolloutBatch,
    thinking_advantages: torch.Tensor,
    summary_advantages: torch.Tensor,
    pad_token_id: int = 0,
) -> PackedBatch:
    """The same training data as plain causal rows (N = B·G·(1 + S·A)); see :func:`unpacked_rows`."""
    return collate_rows(unpacked_rows(batch, thinking_advantages, summary_advantages), pad_token_id)


# ---------------------------------------------------------------------------------------------
# Response-length bound (the constant of the Dr. GRPO normalizer)
# ---------------------------------------------------------------------------------------------


def packed_response_len_bound(max_budget: int, n_budgets: int, n_summary: int, inserted_len: int, summary_max_tokens: int) -> int:
    """Longest possible packed response: ``b_max + S·A·(inserted + summary cap)`` tokens."""
    return max_budget + n_budgets * n_summary * (inserted_len + summary_max_tokens)


def max_response_len(rollout_cfg: RolloutConfig, codec: TokenizerCodec) -> int:
    """:func:`packed_response_len_bound` for a ``RolloutConfig`` and a tokenizer codec.

    The inserted text is the longest one (a cut inside the thinking): cut marker + think-end +
    answer delimiter, each encoded on its own as the rollout does (the length of
    ``inserted_ids(codec).forced`` of the config's
    :class:`~anytime_reasoner.protocol.AnytimeProtocol`; only ``codec.encode`` is needed).
    """
    plan = rollout_cfg.plan()
    protocol = rollout_cfg.protocol()
    inserted = len(codec.encode(protocol.cut_marker)) + 1 + len(codec.encode(protocol.answer_delimiter))
    return packed_response_len_bound(plan.max_budget, len(plan), rollout_cfg.n_summary, inserted, protocol.summary_max_tokens)


# ---------------------------------------------------------------------------------------------
# Several trees per row
# ---------------------------------------------------------------------------------------------


def first_fit_bins(
    lengths: Sequence[int], capacity: int, groups: Sequence[int] | None = None, prompt_lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """First-fit decreasing: positions into ``lengths`` grouped into bins of ≤ ``capacity`` tokens
    (a length above the capacity gets a bin of its own). Bins in order of creation, each listing
    its rows in placement order.

    With ``groups`` (rows of one group share their first ``prompt_lengths`` tokens, see
    :func:`prompt_groups`), a row costs only its tokens after the prompt in a bin that already holds
    a row of its group (:func:`merge_rows` shares the prompt there), and rows are taken group by
    group (groups by their longest row, each group's rows longest first) so that a group's rows
    land together."""
    if groups is None:
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        saved = [0] * len(lengths)
    else:
        longest: dict[int, int] = {}
        for i, g in enumerate(groups):
            longest[g] = max(longest.get(g, 0), lengths[i])
        order = sorted(range(len(lengths)), key=lambda i: (-longest[groups[i]], groups[i], -lengths[i], i))
        prompts = prompt_lengths if prompt_lengths is not None else [0] * len(lengths)
        saved = [p if n > p else 0 for n, p in zip(lengths, prompts, strict=True)]  # as shared_prompt_plan
    bins: list[list[int]] = []
    free: list[int] = []
    held: list[set[int]] = []  # the groups of each bin
    for i in order:
        group = groups[i] if groups is not None else -1
        for k, room in enumerate(free):
            n = lengths[i] - (saved[i] if group in held[k] else 0)
            if n <= room:
                bins[k].append(i)
                free[k] -= n
                held[k].add(group)
                break
        else:
            bins.append([i])
            free.append(capacity - lengths[i])
            held.append({group})
    return bins


def prompt_groups(batch: PackedBatch) -> list[int]:
    """A group number per row (in order of first appearance): rows with the same prompt ids (their
    first ``prompt_lengths`` tokens) share a group. Rows of one question normally form one group."""
    longest = int(batch.prompt_lengths.max()) if batch.n_rows else 0
    ids = batch.input_ids[:, :longest].cpu().tolist()  # [N][longest prompt]: the prompts only
    numbers: dict[tuple[int, ...], int] = {}
    return [numbers.setdefault(tuple(row[:p]), len(numbers)) for row, p in zip(ids, batch.prompt_lengths.tolist(), strict=True)]


def shared_prompt_plan(
    lengths: Sequence[int], prompt_lengths: Sequence[int], groups: Sequence[int], bins: Sequence[Sequence[int]]
) -> tuple[list[int], list[int]]:
    """``(skip, lender)`` per row for :meth:`RowPlacement.of`: in each bin, a row whose group already
    has a row there (the lender, the group's first) skips its prompt and reads the lender's; a row
    with nothing after its prompt keeps it."""
    skip, lender = [0] * len(lengths), list(range(len(lengths)))
    for members in bins:
        first: dict[int, int] = {}
        for i in members:
            j = first.setdefault(groups[i], i)
            if j != i and lengths[i] > prompt_lengths[i]:
                skip[i], lender[i] = prompt_lengths[i], j
    return skip, lender


@dataclass(frozen=True)
class RowPlacement:
    """Where every placed token of ``n`` source rows lands in ``n_bins`` merged rows of width ``width``:
    source token ``(src_row[m], src_col[m])`` → merged ``(dst_row[m], dst_col[m])``, all ``[M]``.
    A source row's first ``skip`` tokens (a prompt it shares with its ``lender`` row) are not placed."""

    src_row: torch.Tensor
    src_col: torch.Tensor
    dst_row: torch.Tensor
    dst_col: torch.Tensor
    offset: torch.Tensor  # [n] where each source row's first placed token lands in its merged row
    doc: torch.Tensor  # [n] the tree number of each source row in its merged row
    skip: torch.Tensor  # [n] tokens at the start of each source row that are not placed (0: none)
    lender: torch.Tensor  # [n] the source row whose prompt a row reads (itself when skip is 0)
    n_bins: int
    width: int

    @classmethod
    def of(
        cls,
        lengths: torch.Tensor,
        bins: Sequence[Sequence[int]],
        skip: Sequence[int] | None = None,
        lender: Sequence[int] | None = None,
    ) -> RowPlacement:
        """The placement of rows of ``lengths [n]`` (CPU) into ``bins`` (from :func:`first_fit_bins`),
        skipping shared prompts as :func:`shared_prompt_plan` says (default: none)."""
        sizes = [int(x) for x in lengths.tolist()]
        skip = list(skip) if skip is not None else [0] * len(sizes)
        lender = list(lender) if lender is not None else list(range(len(sizes)))
        bin_of, offset, doc = [0] * len(sizes), [0] * len(sizes), [0] * len(sizes)
        width = 0
        for k, members in enumerate(bins):
            start = 0
            for d, i in enumerate(members):
                bin_of[i], offset[i], doc[i] = k, start, d
                start += sizes[i] - skip[i]
            width = max(width, start)
        placed = torch.tensor(sizes, dtype=torch.long) - torch.tensor(skip, dtype=torch.long)  # [n]
        src_row = torch.repeat_interleave(torch.arange(len(sizes)), placed)  # [M]
        starts = torch.cumsum(placed, 0) - placed  # [n]
        skips = torch.tensor(skip, dtype=torch.long)  # [n]
        src_col = torch.arange(int(placed.sum())) - starts[src_row] + skips[src_row]  # [M]
        offsets = torch.tensor(offset, dtype=torch.long)  # [n]
        return cls(
            src_row=src_row,
            src_col=src_col,
            dst_row=torch.tensor(bin_of, dtype=torch.long)[src_row],
            dst_col=offsets[src_row] + src_col - skips[src_row],
            offset=offsets,
            doc=torch.tensor(doc, dtype=torch.long),
            skip=skips,
            lender=torch.tensor(lender, dtype=torch.long),
            n_bins=len(bins),
            width=width,
        )

    @classmethod
    def sharing(cls, batch: PackedBatch, bins: Sequence[Sequence[int]], groups: Sequence[int] | None = None) -> RowPlacement:
        """The placement of ``batch``'s rows into ``bins`` holding each prompt once a bin: a row whose
        prompt group (``groups``, default :func:`prompt_groups` of ``batch``) already has a row in its
        bin skips its prompt (:func:`shared_prompt_plan`)."""
        groups = prompt_groups(batch) if groups is None else groups
        skip, lender = shared_prompt_plan(batch.lengths.tolist(), batch.prompt_lengths.tolist(), groups, bins)
        return cls.of(batch.lengths.cpu(), bins, skip, lender)

    def place(self, values: torch.Tensor, fill: float | int | bool) -> torch.Tensor:
        """Source ``[n, t]`` → merged ``[n_bins, width]`` (``fill`` where no token lands)."""
        out = torch.full((self.n_bins, self.width), fill, dtype=values.dtype, device=values.device)  # [n_bins, W]
        out[self.dst_row.to(values.device), self.dst_col.to(values.device)] = values[self.src_row, self.src_col].to(values.device)
        return out

    def unplace(self, merged: torch.Tensor, width: int) -> torch.Tensor:
        """Merged ``[n_bins, W]`` → source ``[n, width]`` (0 past each row's end and on skipped tokens)."""
        n = int(self.offset.numel())
        out = torch.zeros((n, width), dtype=merged.dtype, device=merged.device)  # [n, width]
        out[self.src_row, self.src_col] = merged[self.dst_row, self.dst_col]
        return out

    def moved(self, index: torch.Tensor) -> torch.Tensor:
        """Source row positions ``[n, t]`` (of each row's own tokens, ≥ 0) → merged row positions:
        a skipped prompt token is found in the lender's placed prompt."""
        skip, offset = self.skip[:, None], self.offset[:, None]  # [n, 1]
        return torch.where(index >= skip, offset + index - skip, self.offset[self.lender][:, None] + index)  # [n, t]


def merge_rows(batch: PackedBatch, placement: RowPlacement) -> PackedBatch:
    """Rows of one tree each (on the CPU) → rows of several trees (see the module docstring).

    A tree placed without its prompt (``placement.skip``) reads its lender's: its tokens get the
    lender's prompt span as ``shared_start``/``shared_end``, and indices into its prompt
    (``prev_index`` of its first thinking token, of a block cut at 0) point into the lender's.
    Row-level fields of a merged row: ``lengths`` its real tokens; ``prompt_lengths``,
    ``question_index`` and ``rollout_index`` those of its first tree.
    """
    if bool((batch.doc_ids > 0).any()) or batch.shares_prompts:
        raise ValueError("merge_rows: the rows already hold several trees")
    p = placement
    blocks = batch.segment_ids > TRUNK  # [n, t]
    starts = p.dst_col == 0  # [M] the first token of each merged row
    first_row = torch.zeros(p.n_bins, dtype=torch.long)  # [n_bins] the source row of each merged row's first tree
    first_row[p.dst_row[starts]] = p.src_row[starts]
    shared = (p.skip > 0)[:, None]  # [n, 1] the rows that read another row's prompt
    shared_start = torch.where(shared, p.offset[p.lender][:, None], 0).expand_as(batch.segment_ids)  # [n, t]
    shared_end = torch.where(shared, (p.offset[p.lender] + p.skip)[:, None], 0).expand_as(batch.segment_ids)  # [n, t]
    return PackedBatch(
        input_ids=p.place(batch.input_ids, 0),
        position_ids=p.place(batch.position_ids, 0),
        segment_ids=p.place(batch.segment_ids, PADDING),
        visible_trunk=p.place(torch.where(blocks, p.moved(batch.visible_trunk), batch.visible_trunk), 0),
        prev_index=p.place(torch.where(batch.prev_index >= 0, p.moved(batch.prev_index.clamp(min=0)), -1), -1),
        doc_ids=p.place(p.doc[:, None].expand_as(batch.segment_ids), PADDING),
        shared_start=p.place(shared_start, 0),
        shared_end=p.place(shared_end, 0),
        trainable_mask=p.place(batch.trainable_mask, False),
        advantages=p.place(batch.advantages, 0.0),
        rollout_logprobs=p.place(batch.rollout_logprobs, NAN),
        lengths=torch.zeros(p.n_bins, dtype=torch.long).index_add_(0, p.dst_row, torch.ones_like(p.dst_row)),
        prompt_lengths=batch.prompt_lengths[first_row],
        question_index=batch.question_index[first_row],
        rollout_index=batch.rollout_index[first_row],
    )
