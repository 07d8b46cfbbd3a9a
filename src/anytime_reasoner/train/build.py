"""Builds a :class:`~anytime_reasoner.train.trainer.Trainer` from a validated :class:`TrainConfig`.

``model.path=tiny`` selects the embedded default (a tiny local model bootstrapped on the synthetic
task, cached on disk); anything else is a Hugging Face causal LM name or path with a chat template.
``trainer.resume=auto`` continues from the newest checkpoint in ``trainer.out``: the model is built
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
from anytime_reasoner.config.train import EMBEDDED_MODEL
from anytime_reasoner.data.build import load_source
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.schema import Example
from anytime_reasoner.data.sources import check_sources
from anytime_reasoner.errors import UserError, check_writable
from anytime_reasoner.models.checks import load_model_config
from anytime_reasoner.models.engines import build_engine, check_engine, model_for_engine
from anytime_reasoner.models.loading import generation_eos_ids, load_model_and_tokenizer, load_tokenizer
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier
from anytime_reasoner.tasks.bootstrap import ensure_base_model
from anytime_reasoner.tasks.synthetic import synthetic_held_out
from anytime_reasoner.train.checkpoint import (
    config_changes,
    has_train_state,
    latest_checkpoint,
    load_train_state,
    load_trainer_state,
)
from anytime_reasoner.train.fsdp import enable_activation_checkpointing, shard_policy
from anytime_reasoner.train.logprobs import PolicyScorer, attn_implementation_for
from anytime_reasoner.train.lora import apply_lora
from anytime_reasoner.train.runtime import Runtime, init_runtime, main_first, shutdown
from anytime_reasoner.train.sources import FiniteSource, QuestionSource, SyntheticSource
from anytime_reasoner.train.trainer import Trainer
from anytime_reasoner.train.update import build_optimizer

log = logging.getLogger(__name__)


def base_model_path(cfg: TrainConfig) -> str:
    """The path or hub name of the model to start from (bootstrapping the tiny default if needed)."""
    if cfg.model.path != EMBEDDED_MODEL:
        return cfg.model.path
    return str(ensure_base_model(progress=cfg.trainer.progress))


def build_sources(cfg: TrainConfig, tokenizer: Any) -> tuple[QuestionSource, list[Example]]:
    seed = cfg.trainer.seed
    source: QuestionSource
    if cfg.data.train == "synthetic":
        source = SyntheticSource(seed=seed)
    else:
        source = FiniteSource(_load_examples(cfg.data.train, cfg, tokenizer), seed=seed)
    if cfg.data.val == "synthetic":
        val = synthetic_held_out(cfg.data.val_size)
    else:
        val = _load_examples(cfg.data.val, cfg, tokenizer)[: cfg.data.val_size]
    return source, val


def check_data(cfg: TrainConfig) -> None:
    """Resolve every training and validation source (names in ``data_dir``, files, hub datasets)
    and check the packages they need, before anything heavy loads: a missing data directory or
    extra is one line, not a failure after the model is loaded."""
    for key, spec in (("data.train", cfg.data.train), ("data.val", cfg.data.val)):
        if spec != "synthetic":
            check_sources([s for s in spec.split(",") if s], cfg.data.data_dir, key)


def _load_examples(spec: str, cfg: TrainConfig, tokenizer: Any) -> list[Example]:
    """Comma-separated sources (files, names in ``data_dir``, hub datasets), validated rows."""
    examples: list[Example] = []
    for source in [s for s in spec.split(",") if s]:
        rows, report = load_source(
            source,
            data_dir=cfg.data.data_dir,
            tokenizer=tokenizer,
            max_prompt_tokens=cfg.data.max_prompt_tokens,
            think_start=cfg.model.think_start,
        )
        log.info(report.summary())
        examples.extend(rows)
    if not examples:
        raise UserError(f"data: {spec!r} holds no usable problems")
    return examples


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
        path = model_for_engine(base_model_path(cfg), cfg.engine, runtime.device.type)
        model_config = load_model_config(path, "model.path")  # a causal LM's config.json? (before its tokenizer)
        check_engine(cfg.engine, model_config, runtime.device.type)
        tokenizer = load_tokenizer(cfg.model.tokenizer or path)
        source, val = build_sources(cfg, tokenizer)  # the data is validated before any weights load
        attention = attn_implementation_for(cfg.model.attention, runtime.device)
        model, tokenizer = load_model_and_tokenizer(path, cfg, runtime.device, attention, tokenizer, model_config)
    model, policy = build_policy(model, cfg, runtime)
    optimizer = build_optimizer(policy, cfg.ppo)
    start = 0
    if resume_from:
        load_train_state(resume_from, policy, optimizer, runtime)
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
    protocol = cfg.protocol()
    codec = TokenizerCodec.for_protocol(tokenizer, protocol, generation_eos_ids(path))
    grading = GraderSettings.from_protocol(protocol)
    return Trainer(
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        engine=build_engine(
            cfg.engine,
            model=model,
            model_path=path,
            dtype=cfg.model.dtype,
            device=runtime.device.type,
            pad_token_id=codec.pad_id,
            seed=cfg.trainer.seed,
            distributed=runtime.distributed,
        ),
        codec=codec,
        verifier=MathVerifier(grading),
        optimizer=optimizer,
        source=source,
        val_examples=val,
        out=out,
        runtime=runtime,
        policy=policy,
        start_step=start,
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
