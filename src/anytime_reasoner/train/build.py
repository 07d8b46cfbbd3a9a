"""Builds a :class:`~anytime_reasoner.train.trainer.Trainer` from a validated :class:`TrainConfig`.

The model, data and rollout parts come from ``train.components`` (shared with a rollout worker
process). ``trainer.resume=auto`` continues from the newest checkpoint in ``trainer.out``: the model is built
from the base model as for a fresh run (float32 master weights, LoRA adapters, FSDP2 sharding),
then the checkpoint's master weights and optimizer state are loaded into it.

Order of the model's wrappers: transformers model (float32) → activation checkpointing →
LoRA (peft) → :class:`PolicyScorer` → FSDP2 (``train.fsdp``) when ``torchrun`` starts several
processes → AdamW over the trainable parameters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from anytime_reasoner.config import TrainConfig, dump
from anytime_reasoner.errors import UserError, check_writable
from anytime_reasoner.train.checkpoint import (
    config_changes,
    has_train_state,
    latest_checkpoint,
    load_rollout_policies,
    load_train_state,
    load_trainer_state,
)
from anytime_reasoner.train.components import check_data, load_base, rollout_parts
from anytime_reasoner.train.fsdp import enable_activation_checkpointing, shard_policy
from anytime_reasoner.train.logprobs import PolicyScorer
from anytime_reasoner.train.lora import apply_lora
from anytime_reasoner.train.runtime import Runtime, init_runtime, main_first, shutdown
from anytime_reasoner.train.trainer import Trainer
from anytime_reasoner.train.update import build_optimizer

log = logging.getLogger(__name__)


def build_trainer(cfg: TrainConfig, runtime: Runtime | None = None) -> Trainer:
    """Every component of a run; ``runtime`` defaults to :func:`init_runtime` (torchrun's environment)."""
    check_data(cfg)
    check_writable(cfg.trainer.out, "trainer.out")
    runtime = runtime or init_runtime(cfg.model.device, cfg.model.dtype)
    torch.manual_seed(cfg.trainer.seed)
    out = Path(cfg.trainer.out)
    resume_from = latest_checkpoint(out) if cfg.trainer.resume != "never" else None
    if resume_from:
        check_resumable(resume_from, cfg)
    with main_first(runtime):  # rank 0 bootstraps or downloads into the shared cache first
        base = load_base(cfg, runtime)
    path, tokenizer = base.path, base.tokenizer
    model, policy = build_policy(base.model, cfg, runtime)
    optimizer = build_optimizer(policy, cfg.ppo)
    start, policies = 0, {}
    if resume_from:
        load_train_state(resume_from, policy, optimizer, runtime)
        policies = load_rollout_policies(resume_from) if runtime.is_main else {}
        state = load_trainer_state(resume_from)
        start = state.step
        log.info("resuming from %s (step %d)", resume_from, start)
        if state.world_size != runtime.world_size:
            log.warning(
                "checkpoint written by %d processes, resumed on %d: later samples differ from an uninterrupted run",
                state.world_size,
                runtime.world_size,
            )
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dump(cfg), indent=2), encoding="utf-8")
    parts = rollout_parts(cfg, model, path, tokenizer, runtime)
    return Trainer(
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        engine=parts.engine,
        codec=parts.codec,
        verifier=parts.verifier,
        optimizer=optimizer,
        source=base.source,
        val_examples=base.val,
        out=out,
        runtime=runtime,
        policy=policy,
        start_step=start,
        resumed_policies=policies,
    )


def check_resumable(checkpoint: Path, cfg: TrainConfig) -> None:
    """Refuse to continue from a checkpoint written with a config that trains differently (the
    keys named), unless ``trainer.resume=force``."""
    if not has_train_state(checkpoint):
        raise UserError(
            f"trainer.resume: {checkpoint} has no train_state/ to resume from (copied in part, or written by an "
            "older version); remove it, or set trainer.resume=never (start over)"
        )
    saved = load_trainer_state(checkpoint).config
    if saved is None or cfg.trainer.resume == "force":
        return
    changed = config_changes(saved, dump(cfg))
    if changed:
        raise UserError(
            f"trainer.resume: {checkpoint} was written with another config: {'; '.join(changed)}; "
            "use the checkpoint's values, a new trainer.out, trainer.resume=never (start over) or trainer.resume=force"
        )


def build_policy(model: Any, cfg: TrainConfig, runtime: Runtime) -> tuple[Any, PolicyScorer]:
    """Activation checkpointing, LoRA and sharding around a loaded float32 model → (the model
    that generates and is saved, the module that trains)."""
    mcfg = cfg.model
    if mcfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    if mcfg.lora_rank:
        model = apply_lora(model, rank=mcfg.lora_rank, alpha=mcfg.lora_alpha, target_modules=mcfg.lora_target_modules)
    policy = PolicyScorer(model)
    if runtime.sharded:
        shard_policy(policy, runtime)
    return model, policy


def _fit(cfg: TrainConfig, runtime: Runtime) -> list[dict[str, Any]]:
    """Build the trainer, train, close its workers; the history of metrics."""
    trainer = build_trainer(cfg, runtime)
    try:
        return trainer.fit()
    finally:
        for part in (trainer.verifier, trainer.engine):  # grading workers; a vLLM engine core
            close = getattr(part, "close", None)
            if close:
                close()


def train(cfg: TrainConfig, runtime: Runtime | None = None) -> list[dict[str, Any]]:
    """Train as ``anytime-reasoner train`` does (in the processes ``torchrun`` started, or this one),
    then shut the runtime down; the history of metrics, one dict per logged step. The model is
    saved in ``trainer.out/final``."""
    runtime = runtime or init_runtime(cfg.model.device, cfg.model.dtype)
    try:
        return _fit(cfg, runtime)  # the trainer is gone when it returns: shutdown can free the group
    finally:
        shutdown(runtime)


def run_train(cfg: TrainConfig) -> int:
    """``anytime-reasoner train``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runtime = init_runtime(cfg.model.device, cfg.model.dtype)
    history = train(cfg, runtime)
    if not runtime.is_main:
        return 0
    last = history[-1] if history else {}
    if "val/accuracy" in last:
        print(f"final validation: anytime {last['val/anytime']:.3f}, final-budget {last['val/final']:.3f}")
    print(f"model saved to {Path(cfg.trainer.out) / 'final'}")
    return 0
