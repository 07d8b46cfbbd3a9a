"""The RL loop: questions → anytime rollout → rewards → advantages → tree-packed PPO update.

The trainer is algorithm-blind: GRPO and every AnytimeReasoner variant differ only in the rollout
config (budgets, prior, A) and the advantage knobs, which reach it as data. One step:

1. ``batch_size`` questions from the source (deterministic in the step number, which counts from 1);
2. G thinkings each, cut at every budget, A summaries per cut, graded (``rollout.anytime``);
3. ``thinking_advantages`` ``[B, G, S]`` and ``summary_advantages`` ``[B, G, S, A]`` (summaries of
   budgets that share one prefix share one baseline);
4. one packed row per thinking, PPO update in mini-batches of questions (``train.update``).

Sampling is the :class:`~anytime_reasoner.train.sampler.Sampler`'s. Random streams: the rollout
of step t is named ``derive_seed(run seed, t, "rollout")`` and its thinking and summary phases
derive their own seeds from that (``rollout.anytime``); validation uses
``derive_seed(run seed, "validation")`` every time, so checkpoints of one run are compared on the
same samples. No two phases share a stream, and a resumed run replays them exactly.

Asynchronous rollouts (``trainer.async_level = k ≥ 1``, ``train.async_rollouts``): a rollout worker
process samples step t with the policy after step t − 1 − k while the trainer trains the steps
before it; the trainer publishes each new policy to it after the update. The loss corrects for
the lag with the engine's log-probs (``ppo.tis_cap``, or ``ppo.decoupled``); ``policy_lag``,
``time_wait_rollouts`` and the worker's ``worker_*_seconds`` are logged each step. Validation runs
in the trainer's process, on the current policy.

Several processes (``torchrun``, ``train.runtime``): rank r rolls out the questions
``r, r + W, r + 2W, …`` of the step (all G thinkings of a question on one rank, so baselines are
exact) from its own streams ``derive_seed(run seed, t, "rollout", "rank", r)``, trains through the
FSDP2-sharded policy (``train.fsdp``), and the ranks' rollout statistics are gathered before
anything is logged; only rank 0 logs, prints and writes files other than its checkpoint shards.
A run's samples therefore depend on the world size; one process keeps the streams above.

Engines with their own weights (vLLM, ``engine.backend=vllm``): the trainer streams its weights
into the engine before the first rollout and after every update (``train.weight_sync``), and
puts the engine to sleep (GPU: KV cache freed, weights offloaded) while it trains. Training
rollouts ask the engine for its log-probs; the update reports how far they are from its own
(``rollout_*`` metrics, ``algo.off_policy``).

Validation samples ``trainer.val_n`` thinkings × ``trainer.val_n_summary`` summaries per question
(the original: 8 × 4) at ``trainer.val_budgets``; ``val/anytime`` is the uniform mean over them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from anytime_reasoner.algo.advantages import brpo_diagnostics, summary_advantages, thinking_advantages
from anytime_reasoner.algo.budgets import BudgetPlan
from anytime_reasoner.algo.length_rewards import LengthShaping, shape_rewards
from anytime_reasoner.config import TrainConfig, dump
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.base import GenerationEngine
from anytime_reasoner.errors import UserError
from anytime_reasoner.rewards.base import Verifier
from anytime_reasoner.rollout.types import RolloutBatch
from anytime_reasoner.train.async_rollouts import ProcessRollouts, RolloutWorkerError, Weights
from anytime_reasoner.train.checkpoint import TrainerState, export_model, prune_checkpoints, save_checkpoint
from anytime_reasoner.train.loggers import MetricLogger
from anytime_reasoner.train.logprobs import PolicyScorer
from anytime_reasoner.train.packing import PackedBatch, empty_batch, max_response_len, pack_rollouts
from anytime_reasoner.train.runtime import Runtime
from anytime_reasoner.train.sampler import Sampled, Sampler
from anytime_reasoner.train.sources import QuestionSource
from anytime_reasoner.train.update import ppo_update
from anytime_reasoner.train.weight_sync import WeightLoadingEngine, policy_weights, sync_engine

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase  # heavy: annotations only

log = logging.getLogger(__name__)


class TrainingStopped(UserError):
    """Training cannot go on (e.g. gradients keep being non-finite); the message says why and where
    the last good weights are."""


@dataclass
class Trainer:
    """Holds the components of one run; :meth:`fit` runs the remaining steps."""

    cfg: TrainConfig
    model: PreTrainedModel  # a transformers causal LM (peft-wrapped under LoRA); generates and is saved
    tokenizer: PreTrainedTokenizerBase
    engine: GenerationEngine
    codec: TokenizerCodec  # token ids of think-start / think-end / EOS / pad, encode and decode
    verifier: Verifier
    optimizer: torch.optim.Optimizer
    source: QuestionSource
    val_examples: Sequence[Example]
    out: Path
    runtime: Runtime
    policy: PolicyScorer  # trains: ``model`` inside, FSDP2-sharded when distributed
    start_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_streak: int = 0  # optimizer steps skipped in a row (non-finite gradient norm)
    resumed_policies: dict[int, Weights] = field(default_factory=dict)  # async: the checkpoint's rollout policies
    worker: ProcessRollouts | None = None  # async: the rollout worker, while fit runs

    @property
    def sampler(self) -> Sampler:
        """Sampling in this process, over the trainer's current components."""
        return Sampler(
            self.cfg, self.model, self.tokenizer, self.engine, self.codec, self.verifier, self.source, self.runtime, self.policy
        )

    @cached_property
    def plan(self) -> BudgetPlan:
        return self.cfg.rollout.plan()

    @cached_property
    def shaping(self) -> LengthShaping:
        return LengthShaping.at_budget(self.cfg.rollout.max_budget, **self.cfg.length.shaping_knobs())

    @cached_property
    def val_plan(self) -> BudgetPlan:
        """Validation budgets (``trainer.val_budgets``, default the rollout's), uniform prior."""
        return self.sampler.val_plan

    @cached_property
    def max_response_len(self) -> int:
        """The constant of the Dr. GRPO normalizer: ``ppo.max_response_len`` if set, else the
        longest possible packed response of the rollout config."""
        if self.cfg.ppo.max_response_len is not None:
            return self.cfg.ppo.max_response_len
        return max_response_len(self.cfg.rollout, self.codec)

    def fit(self) -> list[dict[str, Any]]:
        """Run steps ``start_step+1 … cfg.trainer.steps``; return the metrics of each."""
        tcfg = self.cfg.trainer
        main = self.runtime.is_main
        logger = MetricLogger(self.out, tcfg.loggers, run_config=dump(self.cfg), start_step=self.start_step) if main else None
        steps = range(self.start_step + 1, tcfg.steps + 1)
        if self.cfg.ppo.loss_agg == "constant" and main:
            log.info("loss normalizer: rollouts x max_response_len = %d", self.max_response_len)
        bar = _progress(steps, enabled=tcfg.progress and main, desc=f"train {self.out.name}")
        try:
            self.sync_engine()  # the engine loaded the base model; the trainer may have resumed or adapted it
            self.start_worker()
            for step in bar:
                metrics = self.train_step(step)
                if tcfg.val_every and (step % tcfg.val_every == 0 or step == tcfg.steps):
                    metrics.update(self.validate())
                if logger is not None:
                    logger.log(step, metrics)
                self.history.append({"step": step, **metrics})
                self._check_bad_steps(step, metrics)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(anytime=f"{metrics['anytime_score']:.3f}", loss=f"{metrics['loss']:.4f}")
                if tcfg.save_every and step % tcfg.save_every == 0 and step < tcfg.steps:
                    self.save(step)
            if tcfg.steps > self.start_step:
                self.save(tcfg.steps)
            self.save_final()
        finally:
            if self.worker is not None:
                self.worker.close()
                self.worker = None
            if logger is not None:
                logger.close()
        return self.history

    @property
    def lagged(self) -> bool:
        """Training rollouts come from a rollout worker (``trainer.rollout_placement=process``)."""
        return self.cfg.trainer.placement() == "process"

    def start_worker(self) -> None:
        """``trainer.async_level ≥ 1``: start the rollout worker with the policies the next steps
        sample (rank 0 runs it; every rank joins the gathering of the weights)."""
        if not self.lagged or self.start_step >= self.cfg.trainer.steps:
            return
        current = self.policy_tensors()
        if self.runtime.is_main:
            self.worker = ProcessRollouts.launch(self.cfg, self.out, self.runtime.device)
            self.worker.start(self.start_step, current, self.resumed_policies)
        self.resumed_policies = {}

    def take(self, step: int, plan: BudgetPlan) -> Sampled:
        """This rank's rollouts of ``step``: sampled here, or (lagged) by the rollout worker, which
        samples the whole step as one process does; rank 0 hands each rank its questions."""
        if not self.lagged:
            return self.sample(step, plan)
        whole, failure = None, None
        if self.worker is not None:
            try:
                whole = self.worker.take(step)
            except RolloutWorkerError as err:  # every rank stops with it, not only rank 0
                failure = err
        whole, failure = self.runtime.broadcast((whole, failure))
        if failure is not None:
            raise failure
        assert whole is not None
        return whole.shard(self.runtime)

    def publish(self, step: int) -> None:
        """Send the policy after ``step`` to the rollout worker (every rank gathers, rank 0 sends)."""
        tensors = self.policy_tensors()
        if self.worker is not None:
            self.worker.publish(step, tensors)

    def policy_tensors(self) -> Weights:
        """The current policy as the rollout worker loads it: Hugging Face names (merged under LoRA),
        CPU copies in the compute dtype, on rank 0 (the others join the gathers and keep nothing)."""
        weights = policy_weights(self.policy, self.runtime.compute_dtype)
        if not self.runtime.is_main:
            for _ in weights:  # under FSDP2 each tensor is a collective every rank runs
                pass
            return {}
        return {name: t.to("cpu", copy=True).contiguous() for name, t in weights}

    # ------------------------------------------------------------------ one step

    def train_step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        plan = self.cfg.plan_at(step)  # the rollout's budgets under the cap schedule
        sampled = self.take(step, plan)
        rollouts, targets, sampling_metrics = sampled.rollouts, sampled.targets, sampled.metrics
        if isinstance(self.engine, WeightLoadingEngine) and not self.lagged:
            self.engine.sleep()  # GPU: memory back to training until the next weight sync
        t_rollout = time.perf_counter() - t0
        phases = {f"time_{name}": seconds for name, seconds in (rollouts.timings if rollouts else {}).items()}
        probs = torch.tensor(plan.probs)  # [S]
        local: RolloutStats | None = None
        length_metrics: dict[str, float] = {}
        if rollouts is None or not sampled.trainable:
            # more ranks than questions, or dynamic sampling kept no question: no update from this
            # rank, which still takes part in the collectives (its rollouts, if any, are only logged)
            update_metrics = self.train_on(empty_batch())
            local = RolloutStats.of(rollouts, rollouts.scores()) if rollouts is not None else None
        else:
            scores = rollouts.scores()  # [B, G, S, A] (this rank's questions): correctness
            cuts = rollouts.cut_lengths()  # [B, G, S]
            rewards, think_keep, summ_keep = shape_rewards(
                scores, cuts, rollouts.closed_within(), rollouts.truncated(), plan.budgets, self.shaping, targets
            )  # [B, G, S, A], [B, G, S], [B, G, S, A]
            rcfg = self.cfg.rollout
            think_adv = thinking_advantages(rewards, probs, rcfg.variance_reduction, rcfg.advantage_norm)  # [B, G, S]
            summ_adv = summary_advantages(rewards, rcfg.summary_method, cuts, rcfg.advantage_norm)  # [B, G, S, A]
            think_adv, summ_adv = think_adv * think_keep, summ_adv * summ_keep
            update_metrics = self.update(rollouts, think_adv, summ_adv)
            local = RolloutStats.of(rollouts, scores)
            if self.shaping.active or targets is not None:
                length_metrics = {"shaped_reward": float(rewards.mean()), "kept_thinking_share": float(think_keep.mean())}
                if targets is not None:
                    length_metrics["target_length"] = float(targets.float().mean())
        t_sync = time.perf_counter()
        if self.lagged:
            self.publish(step)
            update_metrics["time_weight_sync"] = time.perf_counter() - t_sync
        elif self.sync_engine():
            update_metrics["time_weight_sync"] = time.perf_counter() - t_sync
        stats = RolloutStats.cat([s for s in self.runtime.gather(local) if s is not None])  # every rank's questions
        metrics = rollout_metrics(stats, plan)
        metrics.update(update_metrics)
        metrics.update(brpo_diagnostics(stats.scores, probs, stats.segment_mask))  # each [S]
        metrics.update(time_rollout=t_rollout, time_step=time.perf_counter() - t0, **phases)
        metrics.update(max_response_len=self.max_response_len, epoch=self._epoch(step), cap=plan.max_budget)
        metrics.update(length_metrics)
        metrics.update(sampling_metrics)
        metrics["policy_lag"] = float(step - 1 - sampled.version)  # 0 unless asynchronous
        return metrics

    def sample(self, step: int, plan: BudgetPlan) -> Sampled:
        """This rank's training rollouts of ``step``, sampled here by the current policy
        (:meth:`Sampler.sample`; version ``step − 1``)."""
        sampled = self.sampler.sample(step, plan)
        sampled.version = step - 1
        return sampled

    def sync_engine(self) -> bool:
        """Stream the weights into an engine that holds its own copy (True if it does)."""
        return sync_engine(self.engine, self.policy, self.runtime.compute_dtype)

    def _epoch(self, step: int) -> int | None:
        """The pass over a finite training set that step ``step`` reads (None for a stream)."""
        epoch_of = getattr(self.source, "epoch_of", None)
        return epoch_of(step, self.cfg.trainer.batch_size) if epoch_of else None

    def rollout(self, examples: Sequence[Example], *, seed: int, train: bool, **kwargs: Any) -> RolloutBatch | None:
        """:meth:`Sampler.rollout` with the current policy (validation calls it)."""
        return self.sampler.rollout(examples, seed=seed, train=train, **kwargs)

    def update(self, rollouts: RolloutBatch, think_adv: torch.Tensor, summ_adv: torch.Tensor) -> dict[str, float]:
        """Pack this rank's rollouts with their advantages and train on them."""
        t0 = time.perf_counter()
        packed = pack_rollouts(rollouts, think_adv, summ_adv, pad_token_id=self.codec.pad_id)
        t_packing = time.perf_counter() - t0
        metrics = self.train_on(replace(packed, question_index=self.runtime.global_index(packed.question_index)))
        return {**metrics, "time_packing": t_packing}

    def train_on(self, packed: PackedBatch) -> dict[str, float]:
        """PPO on this rank's packed rows (question ids global); all ranks call it together."""
        self.policy.train()
        return ppo_update(
            self.policy,
            self.optimizer,
            packed,
            self.cfg.ppo,
            max_response_len=self.max_response_len,
            attention=self.cfg.model.attention,
            temperature=self.cfg.rollout.temperature,
            runtime=self.runtime,
        )

    def validate(self) -> dict[str, Any]:
        """Accuracy per validation budget on the held-out questions, averaged over the
        ``val_n × val_n_summary`` samples of each question; and BRPO's variance diagnostics where the
        original computes them (its ``_validate``): on the validation rollouts, under the uniform prior
        of the validation budgets, at the validation temperature (``val/var_*``, ``val/ratio_*``; the
        per-step ``var_*``/``ratio_*`` are the same quantities on the training rollouts and prior)."""
        if not self.val_examples:
            return {}
        rollouts = self.rollout(self.runtime.shard(self.val_examples), seed=self.sampler.stream("validation"), train=False)
        local = (rollouts.scores(), rollouts.segment_mask()) if rollouts is not None else None
        gathered = [part for part in self.runtime.gather(local) if part is not None]  # every rank's questions
        scores = torch.cat([s for s, _ in gathered])  # [B, G, S, A]
        segments = torch.cat([m for _, m in gathered])  # [B, G, S]
        acc = scores.mean(dim=(0, 1, 3))  # [S]
        uniform = torch.tensor(self.val_plan.probs)  # [S]
        diagnostics = brpo_diagnostics(scores, uniform, segments)
        return {
            "val/budgets": list(self.val_plan.budgets),
            "val/accuracy": acc.tolist(),
            "val/anytime": float(acc.mean()),
            "val/final": float(acc[-1]),
            **{f"val/{name}": values for name, values in diagnostics.items()},
        }

    # ------------------------------------------------------------------ saving

    def save(self, step: int) -> Path:
        state = TrainerState(
            step=step,
            seed=self.cfg.trainer.seed,
            world_size=self.runtime.world_size,
            epoch=self._epoch(step + 1),
            config=dump(self.cfg),
        )
        policies = self.worker.saved_versions(step) if self.worker is not None else None
        path = save_checkpoint(self.out, state, self.policy, self.tokenizer, self.optimizer, self.runtime, policies)
        if self.runtime.is_main and self.cfg.trainer.keep_checkpoints:
            prune_checkpoints(self.out, self.cfg.trainer.keep_checkpoints)
        return path

    def _check_bad_steps(self, step: int, metrics: dict[str, Any]) -> None:
        """Count optimizer steps skipped in a row for a non-finite gradient; at ``trainer.max_bad_steps``
        save the weights (never touched by those steps) and stop."""
        if metrics["optimizer_steps"] > 0:
            self.bad_streak = int(metrics["trailing_skipped_steps"])
        else:
            self.bad_streak += int(metrics["skipped_steps"])
        limit = self.cfg.trainer.max_bad_steps
        if self.bad_streak >= limit:
            path = self.save(step)
            raise TrainingStopped(
                f"trainer.max_bad_steps: {self.bad_streak} optimizer steps in a row had a non-finite gradient "
                f"(limit {limit}) at step {step}; the weights, which those steps did not change, are saved in {path}"
            )

    def save_final(self) -> Path:
        """``out/final``: the trained model as a transformers folder in the compute dtype (under
        LoRA: the merged model, and the adapter alone in ``out/final/adapter``)."""
        final = self.out / "final"
        export_model(self.policy, final, self.runtime, merged=True)
        if self.runtime.is_main:
            self.tokenizer.save_pretrained(final)
        self.runtime.barrier()
        return final


@dataclass
class RolloutStats:
    """What the step's metrics need from a rollout: small tensors gathered across ranks."""

    scores: torch.Tensor  # [B, G, S, A]
    thinking_lengths: torch.Tensor  # [B, G]
    closed: torch.Tensor  # [B, G] bool: the thinking ended with think-end
    summary_lengths: list[int]  # sampled tokens of every summary
    segment_mask: torch.Tensor  # [B, G, S]

    @classmethod
    def of(cls, rollouts: RolloutBatch, scores: torch.Tensor) -> RolloutStats:
        thinkings = [t for row in rollouts.thinkings for t in row]
        return cls(
            scores=scores,
            thinking_lengths=rollouts.thinking_lengths(),
            closed=torch.tensor([[t.closed for t in row] for row in rollouts.thinkings], dtype=torch.bool),
            summary_lengths=[len(s.sampled_ids) for t in thinkings for per in t.summaries for s in per],
            segment_mask=rollouts.segment_mask(),
        )

    @classmethod
    def cat(cls, parts: Sequence[RolloutStats]) -> RolloutStats:
        """The stats of all ``parts``' questions (in rank order)."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            scores=torch.cat([p.scores for p in parts]),
            thinking_lengths=torch.cat([p.thinking_lengths for p in parts]),
            closed=torch.cat([p.closed for p in parts]),
            summary_lengths=[n for p in parts for n in p.summary_lengths],
            segment_mask=torch.cat([p.segment_mask for p in parts]),
        )


def rollout_metrics(stats: RolloutStats, plan: BudgetPlan) -> dict[str, Any]:
    """Reward per budget, anytime score, thinking/summary lengths, share closed by think-end."""
    per_budget = stats.scores.mean(dim=(0, 1, 3))  # [S]
    return {
        "reward_per_budget": per_budget.tolist(),
        "anytime_score": float((per_budget * torch.tensor(plan.probs)).sum()),
        "final_reward": float(per_budget[-1]),
        "thinking_length": float(stats.thinking_lengths.float().mean()),
        "closed_share": float(stats.closed.float().mean()),
        "summary_length": sum(stats.summary_lengths) / max(len(stats.summary_lengths), 1),
    }


def _progress(iterable: Any, *, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable

    return tqdm(iterable, desc=desc, dynamic_ncols=True)
