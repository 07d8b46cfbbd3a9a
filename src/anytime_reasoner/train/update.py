"""The PPO update over packed rows (docs/ALGORITHM.md §6). Algorithm-blind: it sees a :class:`PackedBatch`.

One call of :func:`ppo_update`:

1. old log-probs of the trainable tokens, recomputed from the rows without grad (unless given),
   except for the first mini-batch of the first epoch in one process without TIS: it trains on
   the rollout's weights, so its own forward gives them (ratio 1; one forward pass fewer);
2. for each of ``ppo_epochs`` epochs, mini-batches of ``ppo_mini_batch_size`` *questions* (all
   rows of a question together, questions in order), one optimizer step each;
3. each mini-batch is split into micro-batches whose padded size (rows × longest row) stays
   within ``ppo_max_token_len`` (rows sorted by length, filled greedily; a row longer than the
   budget goes alone); with ``ppo.multi_tree_rows`` several trees share a row first
   (``train.packing.merge_rows``: first-fit into rows as wide as the mini-batch's longest, or
   as wide as the token budget under tree attention), so padding is what no tree fits into, and
   with ``ppo.share_prompts`` the rows of one prompt go into a row together, which holds that
   prompt once (the other trees read it: ``train.packing``); every micro-batch loss is divided by the *mini-batch*
   normalizer (:func:`minibatch_normalizer`), so the accumulated gradient does not depend on the split;
4. gradient clipping at ``grad_clip`` (the pre-clip norm is reported); a step whose norm is not
   finite is skipped and counted (``skipped_steps``). Departure: the original steps the optimizer
   whatever the norm; skipping keeps one bad batch from writing NaN into every weight.

The ``constant`` normalizer counts *rollouts* (thinkings), not rows: the same as rows for packed
batches, while an unpacked batch (``unpack_rollouts``) gets the same normalizer as its packed twin.

Across ranks (``train.runtime``): each rank holds the rows of its questions, whose ids in
``question_index`` are global (0 … B−1 over all ranks). Mini-batch k is the rows of questions
``k·M … k·M + M − 1`` wherever they live, so every rank steps the optimizer equally often (a rank
may hold none of a mini-batch's questions). The normalizer counts the whole mini-batch over all
ranks (all-reduced) and FSDP sums the gradients (``train.fsdp``), so the gradient equals the
one-process gradient of the same global batch. Forward passes are collective under FSDP, so the
ranks agree on the number of micro-batches (the largest any rank needs); a rank with fewer runs
a one-token stand-in whose loss is multiplied by zero.

Rollout/trainer agreement (``algo.off_policy``): the old log-probs are compared with the
engine's sampling log-probs (``batch.rollout_logprobs``) over every rank's tokens and reported as
``rollout_*`` metrics; with ``ppo.tis_cap > 0`` each token's loss is weighted by the truncated
importance ratio ``min(π_old / π_rollout, tis_cap)``, with ``ppo.decoupled`` by AReaL's behaviour
weight ``π_old / π_rollout`` (0 above ``ppo.behaviour_weight_cap``): ``π_old``, recomputed here, is
the proximal policy. ``rollout_corrected_share`` is the share of those tokens whose weight the
correction truncated or dropped. Both matter most under ``trainer.async_level ≥ 1``, where the
sampling policy is that many updates older.

The model's train/eval mode is left to the caller. ``model`` is a causal LM or a
``train.logprobs.PolicyScorer`` around one (what FSDP shards).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from anytime_reasoner.algo.losses import LossAgg, normalizer_of_count, ppo_policy_loss
from anytime_reasoner.algo.off_policy import (
    MAXS,
    MINS,
    SUMS,
    corrected_share,
    decoupled_weights,
    mismatch_metrics,
    mismatch_sums,
    tis_weights,
)
from anytime_reasoner.config import PPOConfig
from anytime_reasoner.train.logprobs import Attention, packed_logprobs, uses_tree_attention
from anytime_reasoner.train.packing import (
    PackedBatch,
    RowPlacement,
    first_fit_bins,
    merge_rows,
    prompt_groups,
)
from anytime_reasoner.train.runtime import Runtime, compute_weights


def build_optimizer(model: torch.nn.Module, ppo_cfg: PPOConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters with the config's lr, betas and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=ppo_cfg.lr, betas=(ppo_cfg.betas[0], ppo_cfg.betas[1]), weight_decay=ppo_cfg.weight_decay)


def question_mini_batches(
    question_index: torch.Tensor, questions_per_batch: int, n_batches: int | None = None
) -> list[torch.Tensor]:
    """Row indices of each mini-batch: mini-batch k holds the rows whose question id q has
    ``q // questions_per_batch == k``. ``n_batches`` (default: as many as the largest id needs)
    is the global count when the ids are spread over ranks; some entries may then be empty."""
    if n_batches is None:
        n_batches = int(question_index.max()) // questions_per_batch + 1 if question_index.numel() else 0
    batch_of = question_index // questions_per_batch  # [N]
    return [(batch_of == k).nonzero(as_tuple=True)[0] for k in range(n_batches)]  # each [rows]


def token_budget_micro_batches(lengths: torch.Tensor, max_token_len: int, min_count: int = 0) -> list[list[int]]:
    """Split rows (given their lengths ``[n]``) into micro-batches of ≤ ``max_token_len`` padded tokens.

    Rows are taken longest first; a micro-batch grows while ``rows × longest ≤ max_token_len``.
    Returns positions into ``lengths``, followed by empty lists up to ``min_count`` entries.
    """
    sizes = [int(n) for n in lengths.tolist()]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    micro: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = sizes[i]
        if current and (len(current) + 1) * max(longest, n) > max_token_len:
            micro.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        micro.append(current)
    return micro + [[] for _ in range(min_count - len(micro))]


def minibatch_normalizer(batch: PackedBatch, agg: LossAgg, max_response_len: int | None, runtime: Runtime | None = None) -> float:
    """``loss_normalizer`` of a mini-batch: rollouts × ``max_response_len`` (constant) or
    trainable tokens (token-mean), counted over every rank's part of the mini-batch."""
    if agg == "constant":
        count = batch.n_rollouts
    else:
        count = int(batch.trainable_mask.sum())
    if runtime is not None:
        count = int(runtime.all_reduce([count])[0])
    return normalizer_of_count(count, agg, max_response_len)


def multi_tree_micro_batches(
    lengths: torch.Tensor,
    max_token_len: int,
    min_count: int = 0,
    wide: bool = False,
    prompts: tuple[list[int], list[int]] | None = None,
) -> list[list[list[int]]]:
    """Several trees per row: rows (given their lengths ``[n]``) first-fit into bins, then as many
    bins per micro-batch as ``max_token_len`` allows (at least one). Bins are as wide as the longest
    row (a dense mask costs ``T²`` per row), or ``max_token_len`` wide when ``wide`` (tree
    attention: the cost does not grow with the row, so one row per micro-batch, exactly as wide as
    its trees: no padding). ``prompts`` = ``(groups, prompt_lengths)`` per row: a row sharing a bin
    with a row of its group costs its tokens after the prompt (``first_fit_bins``). Returns
    micro-batches of bins of positions into ``lengths``, then empty entries up to ``min_count``."""
    sizes = [int(n) for n in lengths.tolist()]
    micro: list[list[list[int]]] = []
    if sizes:
        width = max(max(sizes), max_token_len) if wide else max(sizes)
        bins = first_fit_bins(sizes, width, *(prompts or (None, None)))
        per = max(1, max_token_len // width)
        micro = [bins[k : k + per] for k in range(0, len(bins), per)]
    return micro + [[] for _ in range(min_count - len(micro))]


def micro_batch_plan(
    batch: PackedBatch,
    max_token_len: int,
    runtime: Runtime | None,
    multi_tree: bool = False,
    wide: bool = False,
    groups: list[int] | None = None,
) -> list[list[list[int]]]:
    """The micro-batches of ``batch`` as bins of row positions (a bin is one row of the model's
    input; one position per bin without ``multi_tree``; ``wide``: see
    :func:`multi_tree_micro_batches`; ``groups``: each row's prompt group, to pack a group's rows
    together and count its prompt once a row), padded with empty entries to the most any rank needs."""
    prompts = (groups, batch.prompt_lengths.tolist()) if multi_tree and groups is not None else None

    def plan(min_count: int = 0) -> list[list[list[int]]]:
        if multi_tree:
            return multi_tree_micro_batches(batch.lengths, max_token_len, min_count, wide, prompts)
        return [[[i] for i in rows] for rows in token_budget_micro_batches(batch.lengths, max_token_len, min_count)]

    micro = plan()
    if runtime is None or not runtime.distributed:
        return micro
    return plan(int(runtime.all_reduce([len(micro)], "max")[0]))


@dataclass
class MicroBatch:
    """The model input of one micro-batch: ``rows`` of a mini-batch as ``part`` (several trees per
    row when ``placement`` is set, a prompt once per row with prompt ``groups``), with the maps
    between both layouts."""

    rows: torch.Tensor  # [n] positions in the mini-batch
    part: PackedBatch  # [n_bins, W] what the model runs
    width: int  # the longest of the n rows
    placement: RowPlacement | None

    @classmethod
    def of(cls, batch: PackedBatch, bins: list[list[int]], groups: list[int] | None = None) -> MicroBatch:
        """``bins`` of ``batch``'s rows; with ``groups`` (each row's prompt group), a prompt once a row."""
        flat = [i for members in bins for i in members]
        rows = torch.tensor(flat, dtype=torch.long)  # [n]
        plain = batch.select(rows)
        if all(len(members) == 1 for members in bins):
            return cls(rows, plain, plain.width, None)
        local, start = [], 0  # the bins renumbered to positions in `plain`
        for members in bins:
            local.append(list(range(start, start + len(members))))
            start += len(members)
        if groups is None:
            placement = RowPlacement.of(plain.lengths.cpu(), local)
        else:
            placement = RowPlacement.sharing(plain, local, [groups[i] for i in flat])
        return cls(rows, merge_rows(plain.to("cpu"), placement), plain.width, placement)

    def to_part(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Per-row ``[N, T']`` values of the mini-batch → the part's layout ``[n_bins, W]``."""
        mine = values[self.rows, : self.width]  # [n, width]
        return mine if self.placement is None else self.placement.place(mine, fill)

    def to_rows(self, values: torch.Tensor) -> torch.Tensor:
        """The part's ``[n_bins, W]`` values → ``[n, width]`` per row."""
        return values if self.placement is None else self.placement.unplace(values, self.width)


def stand_in_row(pad_token_id: int, device: torch.device) -> PackedBatch:
    """A 2-token causal row whose second token is 'trainable': the forward a rank runs when it has
    no rows in a micro-batch that other ranks fill (its loss is multiplied by zero)."""
    two = torch.tensor([[pad_token_id, pad_token_id]], device=device)  # [1, 2]
    zeros = torch.zeros_like(two)
    return PackedBatch(
        input_ids=two,
        position_ids=torch.tensor([[0, 1]], device=device),
        segment_ids=zeros,
        visible_trunk=zeros,
        prev_index=torch.tensor([[-1, 0]], device=device),
        doc_ids=zeros,
        shared_start=zeros,
        shared_end=zeros,
        trainable_mask=torch.tensor([[False, True]], device=device),
        advantages=zeros.float(),
        rollout_logprobs=torch.full((1, 2), float("nan"), device=device),
        lengths=torch.tensor([2], device=device),
        prompt_lengths=torch.tensor([1], device=device),
        question_index=torch.tensor([0], device=device),
        rollout_index=torch.tensor([0], device=device),
    )


@torch.no_grad()
def compute_old_logprobs(
    model: torch.nn.Module,
    batch: PackedBatch,
    *,
    max_token_len: int,
    attention: Attention = "auto",
    chunk_size: int = 1024,
    temperature: float = 1.0,
    runtime: Runtime | None = None,
    multi_tree: bool = False,
    share_prompts: bool = True,
) -> torch.Tensor:
    """Log-probs of the trainable tokens under the current weights, no grad → float32 ``[N, T]`` (CPU)."""
    runtime = runtime or Runtime(device=_device_of(model))
    old_logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32)  # [N, T]
    groups = prompt_groups(batch) if multi_tree and share_prompts else None  # once for all micro-batches
    for bins in micro_batch_plan(batch, max_token_len, runtime, multi_tree, _wide_rows(model, attention), groups):
        if not bins:
            with compute_weights(model, runtime.cast_dtype):
                packed_logprobs(model, stand_in_row(0, runtime.device), attention=attention, chunk_size=chunk_size)
            continue
        micro = MicroBatch.of(batch, bins, groups)
        part = micro.part.to(runtime.device)
        with compute_weights(model, runtime.cast_dtype):
            logprobs = packed_logprobs(
                model, part, attention=attention, chunk_size=chunk_size, temperature=temperature
            )  # [n_bins, W]
        old_logprobs[micro.rows, : micro.width] = micro.to_rows(logprobs.float().cpu())  # [n, width]
    return old_logprobs


@dataclass
class _Tally:
    """Running sums for the returned metrics."""

    loss: float = 0.0
    tokens: float = 0.0
    clip_tokens: float = 0.0
    kl_tokens: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    padded_tokens: int = 0
    row_tokens: int = 0
    micro_batches: int = 0
    grad_norms: list[float] = field(default_factory=list)
    skipped_steps: int = 0

    def add_micro(self, loss: float, metrics: dict[str, torch.Tensor], padded: int, real: int) -> None:
        n = float(metrics["n_tokens"])
        self.loss += loss
        self.tokens += n
        self.clip_tokens += float(metrics["clip_frac"]) * n
        self.kl_tokens += float(metrics["approx_kl"]) * n
        if n:
            self.ratio_min = min(self.ratio_min, float(metrics["ratio_min"]))
            self.ratio_max = max(self.ratio_max, float(metrics["ratio_max"]))
        self.padded_tokens += padded
        self.row_tokens += real
        self.micro_batches += 1

    def reduce(self, runtime: Runtime) -> _Tally:
        """Sums, minima and maxima over ranks (the grad norms are global already)."""
        if not runtime.distributed:
            return self
        sums = runtime.all_reduce(
            [self.loss, self.tokens, self.clip_tokens, self.kl_tokens, self.padded_tokens, self.row_tokens, self.micro_batches]
        )
        ratio_min = runtime.all_reduce([self.ratio_min], "min")[0]
        ratio_max = runtime.all_reduce([self.ratio_max], "max")[0]
        loss, tokens, clip, kl, padded, real, micro = sums
        return _Tally(
            loss, tokens, clip, kl, ratio_min, ratio_max, int(padded), int(real), int(micro), self.grad_norms, self.skipped_steps
        )

    def summary(self, epochs: int) -> dict[str, float]:
        steps = max(len(self.grad_norms), 1)
        count = max(self.tokens, 1.0)
        return {
            "loss": self.loss / steps,  # mean over optimizer steps of the mini-batch loss
            "clip_frac": self.clip_tokens / count,
            "approx_kl": self.kl_tokens / count,
            "ratio_min": self.ratio_min if self.tokens else 1.0,
            "ratio_max": self.ratio_max if self.tokens else 1.0,
            "grad_norm": sum(self.grad_norms) / steps,
            "grad_norm_max": max(self.grad_norms, default=0.0),
            "tokens": self.tokens / epochs,  # trainable tokens per epoch
            "padded_tokens": self.padded_tokens / epochs,  # tokens run through the model per epoch
            "row_tokens": self.row_tokens / epochs,  # of which real (prompt, thinking, inserted, summary)
            "padding_share": 1.0 - self.row_tokens / max(self.padded_tokens, 1),  # pad tokens / tokens run
            "micro_batches": float(self.micro_batches),
            "optimizer_steps": float(len(self.grad_norms) - self.skipped_steps),
            "skipped_steps": float(self.skipped_steps),
            "trailing_skipped_steps": float(_trailing_non_finite(self.grad_norms)),
        }


def accumulate_gradients(
    model: torch.nn.Module,
    batch: PackedBatch,
    old_logprobs: torch.Tensor | None,
    *,
    normalizer: float,
    clip_eps: float,
    clip_eps_high: float | None = None,
    max_token_len: int,
    attention: Attention = "auto",
    chunk_size: int = 1024,
    temperature: float = 1.0,
    tally: _Tally | None = None,
    runtime: Runtime | None = None,
    token_weights: torch.Tensor | None = None,
    multi_tree: bool = False,
    record_old: torch.Tensor | None = None,
    share_prompts: bool = True,
) -> float:
    """Backward the PPO loss of one mini-batch (this rank's rows of it), micro-batch by
    micro-batch; returns the loss of these rows.

    ``old_logprobs`` (and ``token_weights``, if given) is ``[N, T']`` aligned with ``batch`` rows
    (T' ≥ the batch width). ``old_logprobs=None`` means on-policy: the weights are those that the
    old log-probs would come from, so each micro-batch's own log-probs, detached, are its old
    log-probs (ratio 1, the same gradient, one forward fewer); they are written into
    ``record_old [N, T']`` when given. Gradients add into ``.grad``; nothing is stepped or zeroed.
    """
    runtime = runtime or Runtime(device=_device_of(model))
    device = runtime.device
    total = 0.0
    groups = prompt_groups(batch) if multi_tree and share_prompts else None  # once for all micro-batches
    for bins in micro_batch_plan(batch, max_token_len, runtime, multi_tree, _wide_rows(model, attention), groups):
        # forward and backward on the compute casts of the weights (one process; FSDP2 casts its own)
        with compute_weights(model, runtime.cast_dtype):
            if not bins:  # other ranks fill this micro-batch: a collective forward/backward of zero loss
                stand_in = packed_logprobs(model, stand_in_row(0, device), attention=attention, chunk_size=chunk_size)
                (stand_in.sum() * 0.0).backward()
                continue
            micro = MicroBatch.of(batch, bins, groups)
            loss, metrics, n_tokens = _micro_loss(
                model, micro, old_logprobs, token_weights, record_old, normalizer, clip_eps, clip_eps_high,
                attention=attention, chunk_size=chunk_size, temperature=temperature, device=device,
            )  # fmt: skip
            loss.backward()
        total += float(loss.detach())
        if tally is not None:
            tally.add_micro(float(loss.detach()), metrics, *n_tokens)
    return total


def _micro_loss(
    model: torch.nn.Module,
    micro: MicroBatch,
    old_logprobs: torch.Tensor | None,
    token_weights: torch.Tensor | None,
    record_old: torch.Tensor | None,
    normalizer: float,
    clip_eps: float,
    clip_eps_high: float | None,
    *,
    attention: Attention,
    chunk_size: int,
    temperature: float,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[int, int]]:
    """The PPO loss of one micro-batch (with grad), its metrics, and its (padded, real) token counts."""
    part = micro.part.to(device)
    part_weights = micro.to_part(token_weights).to(device) if token_weights is not None else None  # [n_bins, W]
    logprobs = packed_logprobs(model, part, attention=attention, chunk_size=chunk_size, temperature=temperature)  # [n_bins, W]
    if old_logprobs is None:  # on-policy
        part_old_logprobs = logprobs.detach()  # [n_bins, W]
        if record_old is not None:
            record_old[micro.rows, : micro.width] = micro.to_rows(part_old_logprobs.float().cpu())
    else:
        part_old_logprobs = micro.to_part(old_logprobs).to(device)  # [n_bins, W]
    loss, metrics = ppo_policy_loss(
        logprobs,
        part_old_logprobs,
        part.advantages,
        part.trainable_mask,
        normalizer=normalizer,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        token_weights=part_weights,
    )
    return loss, metrics, (part.n_rows * part.width, int(part.lengths.sum()))


def ppo_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: PackedBatch,
    ppo_cfg: PPOConfig,
    *,
    max_response_len: int | None = None,
    old_logprobs: torch.Tensor | None = None,
    attention: Attention = "auto",
    chunk_size: int = 1024,
    temperature: float = 1.0,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """PPO epochs over ``batch``; returns detached metrics (see ``_Tally.summary``), summed over ranks.

    Args:
        batch: packed (or unpacked) rows on any device; micro-batches move to the model's.
        ppo_cfg: clip_eps, loss_agg, ppo_epochs, ppo_mini_batch_size (questions),
            ppo_max_token_len (padded tokens per micro-batch), grad_clip.
        max_response_len: the constant of ``loss_agg="constant"``: the longest possible packed
            response for the config (``train.packing.max_response_len``).
        old_logprobs: ``[N, T]``; recomputed here (no grad) when None.
        runtime: ranks, device and compute dtype (default: one process, the model's device, float32).

    Timings (this rank's seconds): ``time_old_logprobs``, ``time_forward_backward`` (all
    micro-batches of every mini-batch), ``time_optimizer`` (clipping, step, zeroing).
    """
    runtime = runtime or Runtime(device=_device_of(model))
    n_questions = int(runtime.all_reduce([int(batch.question_index.max()) + 1 if batch.n_rows else 0], "max")[0])
    n_mini = -(-n_questions // ppo_cfg.ppo_mini_batch_size)  # ceil
    minis = question_mini_batches(batch.question_index, ppo_cfg.ppo_mini_batch_size, n_mini)
    # The first mini-batch of the first epoch trains on the rollout's weights: its own forward gives
    # its old log-probs. Not with TIS (its weights need them first) nor across ranks (FSDP2's first
    # backward then waits on a collective of a rank that runs the stand-in row).
    corrected = ppo_cfg.tis_cap > 0 or ppo_cfg.decoupled
    on_policy_first = old_logprobs is None and not corrected and not runtime.distributed and bool(minis)
    t0 = time.perf_counter()
    if old_logprobs is None:
        old_logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32)  # [N, T]
        todo = torch.cat([torch.zeros(0, dtype=torch.long), *minis[1:]]) if on_policy_first else torch.arange(batch.n_rows)
        if todo.numel() or not on_policy_first:  # off-policy, every rank joins the collective forwards
            computed = compute_old_logprobs(
                model,
                batch.select(todo) if on_policy_first else batch,
                max_token_len=ppo_cfg.ppo_max_token_len,
                attention=attention,
                chunk_size=chunk_size,
                temperature=temperature,
                runtime=runtime,
                multi_tree=ppo_cfg.multi_tree_rows,
                share_prompts=ppo_cfg.share_prompts,
            )  # [n, t]
            old_logprobs[todo, : computed.shape[1]] = computed
    else:
        on_policy_first = False
    timings = {"time_old_logprobs": time.perf_counter() - t0, "time_forward_backward": 0.0, "time_optimizer": 0.0}
    rollout_logprobs = batch.rollout_logprobs[:, : old_logprobs.shape[1]].cpu()  # [N, T], aligned with old_logprobs
    token_weights = behaviour_weights(old_logprobs, rollout_logprobs, ppo_cfg)  # [N, T] or None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    tally = _Tally()
    for epoch in range(ppo_cfg.ppo_epochs):
        for k, rows in enumerate(minis):
            mini = batch.select(rows)
            live = on_policy_first and epoch == 0 and k == 0
            record = torch.zeros((rows.numel(), old_logprobs.shape[1]), dtype=torch.float32) if live else None  # [n, T]
            optimizer.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            accumulate_gradients(
                model,
                mini,
                None if live else old_logprobs[rows.cpu()],
                normalizer=minibatch_normalizer(mini, ppo_cfg.loss_agg, max_response_len, runtime),
                clip_eps=ppo_cfg.clip_eps,
                clip_eps_high=ppo_cfg.clip_eps_high,
                max_token_len=ppo_cfg.ppo_max_token_len,
                attention=attention,
                chunk_size=chunk_size,
                temperature=temperature,
                tally=tally,
                runtime=runtime,
                token_weights=token_weights[rows.cpu()] if token_weights is not None else None,
                multi_tree=ppo_cfg.multi_tree_rows,
                record_old=record,
                share_prompts=ppo_cfg.share_prompts,
            )
            if record is not None:
                old_logprobs[rows.cpu()] = record
            t1 = time.perf_counter()
            timings["time_forward_backward"] += t1 - t0
            grad_norm = _clip_grad_norm(params, ppo_cfg.grad_clip)
            tally.grad_norms.append(grad_norm)
            if math.isfinite(grad_norm):
                optimizer.step()
            else:
                tally.skipped_steps += 1
            optimizer.zero_grad(set_to_none=True)
            timings["time_optimizer"] += time.perf_counter() - t1
    agreement = rollout_agreement(old_logprobs, rollout_logprobs, batch.trainable_mask.cpu(), runtime)
    if token_weights is not None:
        changed, known = runtime.all_reduce(
            corrected_share(old_logprobs, rollout_logprobs, batch.trainable_mask.cpu(), token_weights)
        )
        agreement["rollout_corrected_share"] = changed / max(known, 1.0)
    return {**tally.reduce(runtime).summary(ppo_cfg.ppo_epochs), **agreement, **timings}


def behaviour_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, ppo_cfg: PPOConfig) -> torch.Tensor | None:
    """Each token's loss weight for the gap between the sampling and the proximal policy ``[N, T]``:
    TIS (``ppo.tis_cap``), AReaL's decoupled weights (``ppo.decoupled``), or None (no correction)."""
    if ppo_cfg.decoupled:
        return decoupled_weights(old_logprobs, rollout_logprobs, ppo_cfg.behaviour_weight_cap)
    if ppo_cfg.tis_cap > 0:
        return tis_weights(old_logprobs, rollout_logprobs, ppo_cfg.tis_cap)
    return None


def rollout_agreement(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, trainable_mask: torch.Tensor, runtime: Runtime
) -> dict[str, float]:
    """The engine-vs-trainer log-prob metrics of ``algo.off_policy`` over every rank's tokens (all ``[N, T]``)."""
    sums = mismatch_sums(old_logprobs, rollout_logprobs, trainable_mask)
    if runtime.distributed:
        added = runtime.all_reduce([sums[k] for k in SUMS])
        low = runtime.all_reduce([sums[k] for k in MINS], "min")
        high = runtime.all_reduce([sums[k] for k in MAXS], "max")
        sums = {**dict(zip(SUMS, added, strict=True)), **dict(zip(MINS, low, strict=True)), **dict(zip(MAXS, high, strict=True))}
    return mismatch_metrics(sums)


def _trailing_non_finite(norms: list[float]) -> int:
    """How many of the last norms are non-finite (skipped steps since the last good one)."""
    count = 0
    for norm in reversed(norms):
        if math.isfinite(norm):
            break
        count += 1
    return count


def _clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """``clip_grad_norm_``; the norm of sharded (DTensor) gradients is already global."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    full = getattr(norm, "full_tensor", None)
    return float(full() if full else norm)


def _wide_rows(model: torch.nn.Module, attention: Attention) -> bool:
    """Rows as wide as the token budget: under tree attention, whose cost does not grow with the row."""
    return uses_tree_attention(getattr(model, "lm", model), attention)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
