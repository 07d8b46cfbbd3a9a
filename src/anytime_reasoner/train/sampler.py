"""The rollout side of a training step: a step's questions → this rank's graded anytime rollouts.

A :class:`Sampler` holds what sampling needs and nothing that trains (no optimizer): the config,
the model and its engine, the tokenizer and codec, the verifier and the question source. The
trainer owns one (``trainer.rollout_placement=inline``); a rollout worker process builds its own
(``train.rollout_worker``), so a step's rollouts are the same function of (run seed, step, policy
weights) wherever they are sampled.

Random streams: the rollout of step t is named ``derive_seed(run seed, t, "rollout")`` and its
thinking and summary phases derive their own seeds from that (``rollout.anytime``); refill round k
of dynamic sampling ``(…, t, "rollout", "refill", k)``; validation ``(run seed, "validation")``.
Several processes add ``("rank", r)`` to every name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from anytime_reasoner.algo.budgets import BudgetPlan
from anytime_reasoner.config import TrainConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import encode_prompt, with_budget
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.base import GenerationEngine
from anytime_reasoner.rewards.base import Verifier
from anytime_reasoner.rollout.anytime import RolloutParams, anytime_rollout
from anytime_reasoner.rollout.types import RolloutBatch
from anytime_reasoner.seeding import derive_seed
from anytime_reasoner.train.fsdp import unsharded
from anytime_reasoner.train.logprobs import PolicyScorer
from anytime_reasoner.train.runtime import Runtime, compute_weights
from anytime_reasoner.train.sources import QuestionSource
from anytime_reasoner.train.weight_sync import WeightLoadingEngine

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase  # heavy: annotations only


@dataclass
class Sampled:
    """A step's training rollouts as the update takes them.

    ``rollouts`` is None when this rank has no questions; ``targets`` ``[B]`` are L1's target
    lengths (None without ``length.prompt_budget``); ``metrics`` are dynamic sampling's
    (``sampling_rounds``, ``kept_questions``, ``informative_share``) plus, from a rollout worker,
    its ``worker_*`` timings; ``version`` is the policy that sampled them: the number of updates
    behind its weights (step t of a synchronous run: t − 1).
    """

    rollouts: RolloutBatch | None
    targets: torch.Tensor | None
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = 0

    def shard(self, runtime: Runtime) -> Sampled:
        """This rank's questions (``runtime.shard``'s: ``r, r + W, …``) of a whole step's rollouts."""
        if self.rollouts is None or not runtime.distributed:
            return self
        mine = list(range(runtime.rank, len(self.rollouts.thinkings), runtime.world_size))
        rollouts = self.rollouts.select(mine) if mine else None
        targets = self.targets[mine] if self.targets is not None and mine else None
        return Sampled(rollouts, targets, dict(self.metrics), self.version)

    @property
    def trainable(self) -> bool:
        """There is something to update on: rollouts, and (dynamic sampling) a kept question."""
        return self.rollouts is not None and self.metrics.get("kept_questions") != 0


@dataclass
class Sampler:
    """Samples, grades and (dynamic sampling) filters the rollouts of a step on this rank."""

    cfg: TrainConfig
    model: PreTrainedModel  # generates (the engine's model, unless the engine holds its own weights)
    tokenizer: PreTrainedTokenizerBase
    engine: GenerationEngine
    codec: TokenizerCodec
    verifier: Verifier
    source: QuestionSource
    runtime: Runtime
    policy: PolicyScorer  # ``model`` inside; gathered whole for generation when FSDP2-sharded

    @cached_property
    def plan(self) -> BudgetPlan:
        return self.cfg.rollout.plan()

    @cached_property
    def val_plan(self) -> BudgetPlan:
        """Validation budgets (``trainer.val_budgets``, default the rollout's), uniform prior."""
        budgets = self.cfg.trainer.val_budgets or list(self.plan.budgets)
        return BudgetPlan.build(max(budgets), budgets=budgets, prior="uniform")

    def sample(self, step: int, plan: BudgetPlan) -> Sampled:
        """This rank's training rollouts of ``step`` and their L1 targets: the step's
        ``batch_size`` questions, sampled by the weights the model holds now.

        Under ``rollout.dynamic_sampling`` (DAPO) only the questions whose scores are not all equal
        are kept, and rounds of ``batch_size`` more questions (``source.refill``, each round with
        its own stream) are rolled out until ``batch_size`` are kept or ``max_sampling_rounds``
        rounds ran; the first ``batch_size`` kept, in (round, question) order, are trained. If no round
        kept any, round 0's rollouts are returned with ``kept_questions`` 0: the step logs them and
        does not update (DAPO stops with an error there). Metrics: ``sampling_rounds``,
        ``kept_questions``, ``informative_share`` (kept / rolled out).
        """
        rcfg, size = self.cfg.rollout, self.cfg.trainer.batch_size
        if not rcfg.dynamic_sampling:
            return Sampled(*self._sample_round(step, plan, 0))
        rounds: list[tuple[RolloutBatch | None, torch.Tensor | None]] = []
        kept: list[tuple[int, int]] = []  # (round, global question index), every rank's
        sampled = 0
        for k in range(rcfg.max_sampling_rounds):
            rollouts, targets = self._sample_round(step, plan, k)
            rounds.append((rollouts, targets))
            for rank, informative in enumerate(self.runtime.gather(rollouts.informative() if rollouts else [])):
                sampled += len(informative)
                kept += [(k, rank + self.runtime.world_size * i) for i, ok in enumerate(informative) if ok]
            if len(kept) >= size:
                break
        chosen = set(sorted(kept)[:size])
        parts, part_targets = [], []
        for k, (rollouts, targets) in enumerate(rounds):
            mine = [i for i in range(len(rollouts.thinkings) if rollouts else 0) if (k, self.runtime.global_index(i)) in chosen]
            if rollouts is not None and mine:
                parts.append(rollouts.select(mine))
                part_targets += [targets[mine]] if targets is not None else []
        metrics = {
            "sampling_rounds": float(len(rounds)),
            "kept_questions": float(len(chosen)),
            "informative_share": len(kept) / max(sampled, 1),
        }
        if not chosen:  # no round had an informative question: round 0 is logged, nothing is trained
            return Sampled(*rounds[0], metrics)
        if not parts:
            return Sampled(None, None, metrics)
        return Sampled(RolloutBatch.cat(parts), torch.cat(part_targets) if part_targets else None, metrics)

    def _sample_round(self, step: int, plan: BudgetPlan, k: int) -> tuple[RolloutBatch | None, torch.Tensor | None]:
        """Round ``k`` of step ``step``: the step's questions (k = 0) or refill k, this rank's share,
        rolled out from the round's own stream (round 0's is the step's rollout stream)."""
        size = self.cfg.trainer.batch_size
        questions = self.source.batch(step, size) if k == 0 else self.source.refill(step, k, size)
        examples = self.runtime.shard(questions)
        named = ("rollout",) if k == 0 else ("rollout", "refill", k)
        targets = self.targets(step, len(examples), plan, k)
        return self.rollout(examples, seed=self.stream(step, *named), train=True, plan=plan, targets=targets), targets

    def targets(self, step: int, n_questions: int, plan: BudgetPlan, refill: int = 0) -> torch.Tensor | None:
        """L1's target lengths ``[B]``: one per question, uniform over the ``length.target_*``
        range of the step's cap, from the step's own stream (a refill round's: its own; None unless
        ``length.prompt_budget``; the L1 rewards require it)."""
        lcfg = self.cfg.length
        if not lcfg.prompt_budget:
            return None
        low = max(1, round(lcfg.target_min * plan.max_budget))
        high = max(low, round(lcfg.target_max * plan.max_budget))
        named = ("targets",) if refill == 0 else ("targets", "refill", refill)
        generator = torch.Generator().manual_seed(self.stream(step, *named))
        return torch.randint(low, high + 1, (n_questions,), generator=generator)

    def stream(self, *parts: int | str) -> int:
        """The seed named by ``parts`` on this rank (one process: no rank in the name)."""
        rank = ("rank", self.runtime.rank) if self.runtime.distributed else ()
        return derive_seed(self.cfg.trainer.seed, *parts, *rank)

    def rollout(
        self,
        examples: Sequence[Example],
        *,
        seed: int,
        train: bool,
        plan: BudgetPlan | None = None,
        targets: torch.Tensor | None = None,
    ) -> RolloutBatch | None:
        """G thinkings per question, cut and summarized at ``plan`` (default: the rollout's), each
        prompt stating its target when ``length.prompt_budget`` (validation: ``val_n`` ×
        ``val_n_summary`` at the validation budgets, no targets); None for no questions (the rank
        still joins the gathers)."""
        params = RolloutParams.from_config(self.cfg.rollout, seed=seed, protocol=self.cfg.protocol())
        params = replace(params, logprobs=train)
        plan = self.plan if plan is None else plan
        if not train:  # validation: val_n thinkings × val_n_summary summaries, evaluation temperature
            tcfg = self.cfg.trainer
            plan = self.val_plan
            params = replace(params, n_thinking=tcfg.val_n, n_summary=tcfg.val_n_summary, temperature=tcfg.val_temperature)
        messages = [e.messages for e in examples]
        if targets is not None:
            messages = [with_budget(m, self.cfg.length.budget_prompt, int(n)) for m, n in zip(messages, targets, strict=True)]
        prompts = [encode_prompt(self.tokenizer, m, self.codec.think_start) for m in messages]
        own_weights = isinstance(self.engine, WeightLoadingEngine)
        self.model.eval()
        weights = contextlib.nullcontext() if own_weights else unsharded(self.policy)  # N processes: whole, bf16
        with torch.no_grad(), weights, compute_weights(self.model, None if own_weights else self.runtime.cast_dtype):
            if not examples:
                return None
            return anytime_rollout(
                self.engine, self.codec, prompts, [list(e.ground_truths) for e in examples], plan, params, self.verifier
            )

    def close(self) -> None:
        """Stop the grading workers and an engine core (vLLM)."""
        for part in (self.verifier, self.engine):
            close: Any = getattr(part, "close", None)
            if close:
                close()
