"""The anytime rollout (docs/ALGORITHM.md §3): G thinkings per question, cut at every budget, A summaries per cut.

For a batch of B questions:

1. Sample G thinkings per prompt up to the largest budget b_m, stopping on the think-end token
   (kept) or EOS (kept). Each prompt is encoded once for its G samples.
2. Cut every thinking z (length L) at every budget b_j:
   - closed with think-end and L ≤ b_j: keep z whole, insert the answer delimiter;
   - otherwise (cut inside, unfinished at b_m, or ended by EOS): keep z[:min(b_j, L)], insert
     cut marker + think-end + answer delimiter (the texts and the summary cap:
     :class:`~anytime_reasoner.protocol.AnytimeProtocol`, ``params.protocol``).
   Budgets that give the same cut share one summary prefix ``prompt + z[:cut] + inserted``; it is
   sent to the engine once with ``n = A × (budgets sharing it)`` and the samples are dealt out A
   per budget in budget order (each budget keeps its own A samples). All prefixes of the batch go
   in ONE engine call. The thinking call asked the engine to keep its KV cache
   (``SamplingParams.keep_cache``), so an engine that holds one runs only the inserted text of each
   prefix (``engine/prefix_cache.py``); the others encode the prefix as usual.
3. Grade each summary: response = decode(z[:cut] + inserted) + decode(summary); reward =
   ``grade.reward``, except for a thinking ended by EOS (no think-end, before the cap): the cut
   group whose prefix is the whole thinking (EOS included: every budget at or past its end) scores
   0, as in the original (format rule, docs/ALGORITHM.md §4). Its earlier cuts hold no EOS; they
   are ordinary partial thinkings, graded as usual.

Output: :class:`RolloutBatch` with ``scores()`` ``[B, G, S, A]`` and ``segment_mask()`` ``[B, G, S]``.

One pass (:meth:`RolloutParams.in_one_pass` and an :class:`~anytime_reasoner.engine.base.AnswerEngine`):
step 1 also samples, in the thinking's own pass, the first summary of its last cut group (the
largest budget's: the delimiter forced where the thinking closes, the cut text where it reaches b_m),
so step 2 asks the engine for one summary fewer from that prefix. ``one_pass="auto"`` (the default)
does so only where it leaves step 2 nothing to do (S = A = 1: GRPO): with more summaries per
thinking it saves one row of many batched ones but lengthens the thinking call by the answer's
decoding steps, a loss on this project's 2-core machine (docs/BENCHMARKS.md, "One pass").
The summary is the same draw from the same distribution; only the random stream it comes from
differs (the thinking's), so one-pass and two-phase rollouts are equally valid but not equal.

Random streams: ``params.seed`` names the rollout; the thinking and summary phases sample with
``derive_seed(seed, "thinking")`` and ``derive_seed(seed, "summary")`` (:mod:`anytime_reasoner.seeding`),
so no phase of one rollout replays a stream of another.

Departures from the paper's text: EOS also ends a thinking (the paper only names think-end and the
cap; the original's engine stops on EOS too); the response text is decoded in two pieces (the shared prefix once per distinct cut, then
each summary), which equals decoding the whole for byte-level tokenizers at these boundaries
(the inserted text starts and ends with ASCII).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from anytime_reasoner.algo.budgets import BudgetPlan
from anytime_reasoner.config import RolloutConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.engine.base import AnswerEngine, Completion, ForcedAnswer, GenerationEngine, SamplingParams
from anytime_reasoner.protocol import AnytimeProtocol, InsertedIds
from anytime_reasoner.rewards.base import Verifier
from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.seeding import derive_seed


@dataclass(frozen=True)
class RolloutParams:
    """Sampling knobs of one anytime rollout (training: from :class:`RolloutConfig`; evaluation:
    G = samples per question, A = 1), and the cut protocol it follows (inserted texts, summary cap)."""

    n_thinking: int  # G
    n_summary: int  # A
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    protocol: AnytimeProtocol = field(default_factory=AnytimeProtocol)
    logprobs: bool = False  # keep the engine's log-prob of every sampled token (training: off-policy metrics)
    one_pass: bool | Literal["auto"] = "auto"  # the last cut's first summary in the thinking's pass (auto: S = A = 1)

    def __post_init__(self) -> None:
        if self.n_thinking < 1 or self.n_summary < 1:
            raise ValueError(f"n_thinking and n_summary must be >= 1, got {self.n_thinking}, {self.n_summary}")

    def in_one_pass(self, n_budgets: int) -> bool:
        """Sample the last cut's first summary in the thinking's pass (where the engine can)."""
        if self.one_pass == "auto":
            return n_budgets == 1 and self.n_summary == 1
        return self.one_pass

    @classmethod
    def from_config(cls, cfg: RolloutConfig, seed: int | None = None, protocol: AnytimeProtocol | None = None) -> RolloutParams:
        """The knobs of ``cfg``; ``protocol`` defaults to ``cfg.protocol()`` (pass the training
        config's, :meth:`TrainConfig.protocol`, to carry the model's think markers)."""
        return cls(
            n_thinking=cfg.n,
            n_summary=cfg.n_summary,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            protocol=protocol if protocol is not None else cfg.protocol(),
            one_pass=cfg.one_pass,
        )


@dataclass(frozen=True)
class CutGroup:
    """Budgets (indices into the plan) whose summaries share one prefix of a thinking."""

    cut: int  # thinking tokens kept
    natural: bool  # True: the whole thinking closed itself before the cut (insert only the delimiter)
    budget_indices: tuple[int, ...]


@dataclass(frozen=True)
class SummaryRequest:
    """One distinct summary prefix: thinking ``[b][g]`` cut as ``group``."""

    b: int
    g: int
    group: CutGroup
    prefix: tuple[int, ...]  # prompt + thinking[:cut] + inserted


def cut_groups(length: int, closed: bool, budgets: Sequence[int]) -> list[CutGroup]:
    """Distinct cuts of a thinking of ``length`` tokens over ``budgets``, in budget order."""
    keys: dict[tuple[int, bool], list[int]] = {}
    for j, budget in enumerate(budgets):
        natural = closed and length <= budget
        cut = length if natural else min(budget, length)
        keys.setdefault((cut, natural), []).append(j)
    return [CutGroup(cut, natural, tuple(js)) for (cut, natural), js in keys.items()]


def ended_by_eos(thinking: Thinking, eos_id: int) -> bool:
    """A thinking that ended on the tokenizer's EOS (``eos_id``) without think-end. One that stopped
    on another of the model's EOS ids is not: it is cut there like any unfinished thinking."""
    return not thinking.closed and bool(thinking.thinking_ids) and thinking.thinking_ids[-1] == eos_id


def holds_eos(thinking: Thinking, cut: int, eos_id: int) -> bool:
    """True when the prefix ``thinking[:cut]`` ends with the EOS that ended the thinking: its
    summaries score 0, as the original's (the earlier cuts of the same thinking are graded as usual)."""
    return ended_by_eos(thinking, eos_id) and cut == thinking.length


def phase_seed(seed: int | None, phase: str) -> int | None:
    """The seed of one phase (``"thinking"`` or ``"summary"``) of the rollout named by ``seed``."""
    return None if seed is None else derive_seed(seed, phase)


def sample_thinkings(
    engine: GenerationEngine,
    codec: TokenizerCodec,
    prompt_ids: Sequence[Sequence[int]],
    budgets: Sequence[int],
    params: RolloutParams,
    one_pass: bool,
) -> list[list[tuple[Thinking, Completion | None]]]:
    """``[B][G]`` thinkings, each with the answer sampled in its pass (``one_pass`` and an
    :class:`AnswerEngine`; None otherwise, or where the thinking ended by EOS)."""
    sampling = SamplingParams(
        max_new_tokens=max(budgets),
        temperature=params.temperature,
        top_p=params.top_p,
        stop_token_ids=(codec.think_end_id, *codec.eos_ids),
        seed=phase_seed(params.seed, "thinking"),
        logprobs=params.logprobs,
        keep_cache=not (one_pass and len(budgets) == 1 and params.n_summary == 1),  # the summaries fork from it
    )
    if one_pass and isinstance(engine, AnswerEngine):
        inserted = params.protocol.inserted_ids(codec)
        answer = ForcedAnswer(
            close_id=codec.think_end_id,
            after_close=inserted.closed,
            after_budget=inserted.forced,
            max_answer_tokens=params.protocol.summary_max_tokens,
            stop_ids=codec.eos_ids,
        )
        completions = engine.sample_with_answers(prompt_ids, params.n_thinking, sampling, answer)  # [B][G]
    else:
        completions = engine.sample(prompt_ids, params.n_thinking, sampling)  # [B][G]
    return [
        [(_thinking(prompt, c, codec, budgets), c.answer.completion if c.answer else None) for c in row]
        for prompt, row in zip(prompt_ids, completions, strict=False)
    ]


def _thinking(prompt: Sequence[int], c: Completion, codec: TokenizerCodec, budgets: Sequence[int]) -> Thinking:
    ids = list(c.token_ids)
    closed = bool(ids) and ids[-1] == codec.think_end_id
    cuts = [0] * len(budgets)
    for group in cut_groups(len(ids), closed, budgets):
        for j in group.budget_indices:
            cuts[j] = group.cut
    return Thinking(
        prompt_ids=list(prompt),
        thinking_ids=ids,
        closed=closed,
        cuts=cuts,
        summaries=[[] for _ in budgets],
        finish_reason=c.finish_reason,
        thinking_logprobs=list(c.logprobs) if c.logprobs is not None else None,
    )


def summary_requests(thinkings: list[list[Thinking]], budgets: Sequence[int], inserted: InsertedIds) -> list[SummaryRequest]:
    """One request per distinct cut of every thinking, in ``[b][g]`` then budget order."""
    requests = []
    for b, row in enumerate(thinkings):
        for g, t in enumerate(row):
            for group in cut_groups(t.length, t.closed, budgets):
                prefix = tuple(t.prompt_ids) + tuple(t.thinking_ids[: group.cut]) + inserted.of(group.natural)
                requests.append(SummaryRequest(b, g, group, prefix))
    return requests


def anytime_rollout(
    engine: GenerationEngine,
    codec: TokenizerCodec,
    prompt_ids: Sequence[Sequence[int]],
    ground_truths: Sequence[Sequence[str]],
    plan: BudgetPlan,
    params: RolloutParams,
    verifier: Verifier,
) -> RolloutBatch:
    """Roll out B questions: ``scores()`` of the result is ``[B, G, S, A]`` (S = ``len(plan)``)."""
    if len(prompt_ids) != len(ground_truths):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(ground_truths)} ground-truth lists")
    inserted = params.protocol.inserted_ids(codec)
    t0 = time.perf_counter()
    one_pass = params.in_one_pass(len(plan.budgets))
    sampled = sample_thinkings(engine, codec, prompt_ids, plan.budgets, params, one_pass=one_pass)
    thinkings = [[t for t, _ in row] for row in sampled]
    t_thinking = time.perf_counter() - t0
    requests = summary_requests(thinkings, plan.budgets, inserted)
    in_pass = [_answer_in_pass(r, sampled, len(plan.budgets)) for r in requests]  # the summary each already has
    sampling = SamplingParams(
        max_new_tokens=params.protocol.summary_max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop_token_ids=codec.eos_ids,
        seed=phase_seed(params.seed, "summary"),
        logprobs=params.logprobs,
    )
    counts = [params.n_summary * len(r.group.budget_indices) - (a is not None) for r, a in zip(requests, in_pass, strict=True)]
    t1 = time.perf_counter()
    completions = engine.sample([r.prefix for r in requests], counts, sampling) if any(counts) else [[] for _ in requests]
    completions = [([a] if a is not None else []) + list(c) for a, c in zip(in_pass, completions, strict=True)]
    t_summary = time.perf_counter() - t1
    t_grading = _attach_summaries(thinkings, requests, completions, codec, inserted, params.n_summary, ground_truths, verifier)
    timings = {"thinking": t_thinking, "summary": t_summary, "grading": t_grading}
    return RolloutBatch(
        budgets=plan.budgets, thinkings=thinkings, ground_truths=[list(t) for t in ground_truths], timings=timings
    )


def _answer_in_pass(
    request: SummaryRequest, sampled: list[list[tuple[Thinking, Completion | None]]], n_budgets: int
) -> Completion | None:
    """The answer sampled in the thinking's pass, when ``request`` is the cut it was sampled at: the
    group holding the largest budget (whose prefix ends with the text the pass forced)."""
    if n_budgets - 1 not in request.group.budget_indices:
        return None
    return sampled[request.b][request.g][1]


def _attach_summaries(
    thinkings: list[list[Thinking]],
    requests: Sequence[SummaryRequest],
    completions: Sequence[Sequence[Completion]],
    codec: TokenizerCodec,
    inserted: InsertedIds,
    n_summary: int,
    ground_truths: Sequence[Sequence[str]],
    verifier: Verifier,
) -> float:
    """Deal each request's samples A per budget, grade all responses in one call, fill summaries;
    returns the seconds the grading took."""
    pending: list[tuple[Thinking, int, tuple[int, ...], Completion, str, bool]] = []
    responses: list[str] = []
    truths: list[Sequence[str]] = []
    for request, samples in zip(requests, completions, strict=False):
        t = thinkings[request.b][request.g]
        ins = inserted.of(request.group.natural)
        prefix_text = codec.decode(t.thinking_ids[: request.group.cut] + list(ins))
        zeroed = holds_eos(t, request.group.cut, codec.eos_id)
        for k, j in enumerate(request.group.budget_indices):
            for c in samples[k * n_summary : (k + 1) * n_summary]:
                text = codec.decode(_strip_eos(c.token_ids, codec.eos_id))
                pending.append((t, j, ins, c, text, zeroed))
                responses.append(prefix_text + text)
                truths.append(ground_truths[request.b])
    t0 = time.perf_counter()
    grades = verifier.grade(responses, truths)
    t_grading = time.perf_counter() - t0
    if len(grades) != len(responses):
        raise RuntimeError(f"verifier returned {len(grades)} grades for {len(responses)} responses")
    for (t, j, ins, c, text, zeroed), grade in zip(pending, grades, strict=False):
        reward = 0.0 if zeroed else grade.reward
        t.summaries[j].append(
            Summary(
                inserted_ids=list(ins),
                sampled_ids=list(c.token_ids),
                text=text,
                reward=reward,
                extracted=grade.extracted,
                finish_reason=c.finish_reason,
                sampled_logprobs=list(c.logprobs) if c.logprobs is not None else None,
            )
        )
    return t_grading


def _strip_eos(ids: Sequence[int], eos_id: int) -> Sequence[int]:
    return ids[:-1] if ids and ids[-1] == eos_id else ids
