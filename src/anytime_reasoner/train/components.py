"""The parts of a run that the trainer and a rollout worker process both load from a config: the
base model's path, the question sources, and the rollout side (tokenizer codec, verifier, engine).

``model.path=tiny`` selects the embedded default (a tiny local model bootstrapped on the synthetic
task, cached on disk); anything else is a Hugging Face causal LM name or path with a chat template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from anytime_reasoner.config import TrainConfig
from anytime_reasoner.config.train import EMBEDDED_MODEL
from anytime_reasoner.data.build import load_source
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.schema import Example
from anytime_reasoner.data.sources import check_sources
from anytime_reasoner.engine.base import GenerationEngine
from anytime_reasoner.errors import UserError
from anytime_reasoner.models.checks import load_model_config
from anytime_reasoner.models.engines import build_engine, check_engine, model_for_engine
from anytime_reasoner.models.loading import generation_eos_ids, load_model_and_tokenizer, load_tokenizer
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier
from anytime_reasoner.tasks.bootstrap import ensure_base_model
from anytime_reasoner.tasks.synthetic import synthetic_held_out
from anytime_reasoner.train.logprobs import attn_implementation_for
from anytime_reasoner.train.runtime import Runtime
from anytime_reasoner.train.sources import FiniteSource, QuestionSource, SyntheticSource

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


@dataclass
class BaseParts:
    """The model a run starts from, as loaded: its path (or hub name), tokenizer, the training
    source and validation questions, and the float32 transformers model."""

    path: str
    tokenizer: Any
    source: QuestionSource
    val: list[Example]
    model: Any


def load_base(cfg: TrainConfig, runtime: Runtime) -> BaseParts:
    """Resolve and check the model, validate the data (before any weights load), load the model."""
    path = model_for_engine(base_model_path(cfg), cfg.engine, runtime.device.type)
    model_config = load_model_config(path, "model.path")  # a causal LM's config.json? (before its tokenizer)
    check_engine(cfg.engine, model_config, runtime.device.type)
    tokenizer = load_tokenizer(cfg.model.tokenizer or path)
    source, val = build_sources(cfg, tokenizer)
    attention = attn_implementation_for(cfg.model.attention, runtime.device)
    model, tokenizer = load_model_and_tokenizer(path, cfg, runtime.device, attention, tokenizer, model_config)
    return BaseParts(path, tokenizer, source, val, model)


@dataclass
class RolloutParts:
    """What sampling needs beside the model: the codec of the protocol's token ids, the verifier
    (with its grading workers), and the engine."""

    codec: TokenizerCodec
    verifier: MathVerifier
    engine: GenerationEngine


def rollout_parts(cfg: TrainConfig, model: Any, path: str, tokenizer: Any, runtime: Runtime) -> RolloutParts:
    """The codec, verifier and engine of a run whose model (loaded from ``path``) is ``model``."""
    protocol = cfg.protocol()
    codec = TokenizerCodec.for_protocol(tokenizer, protocol, generation_eos_ids(path))
    engine = build_engine(
        cfg.engine,
        model=model,
        model_path=path,
        dtype=cfg.model.dtype,
        device=runtime.device.type,
        pad_token_id=codec.pad_id,
        seed=cfg.trainer.seed,
        distributed=runtime.distributed,
    )
    return RolloutParts(codec, MathVerifier(GraderSettings.from_protocol(protocol)), engine)
