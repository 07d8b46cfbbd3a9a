"""The public API: what a user scripts against, importable from one place.

    from anytime_reasoner.api import TrainConfig, build_config, train
    history = train(build_config(TrainConfig, preset="ar-uniform", overrides=["trainer.steps=2"]))

Everything a command does is a function here too (``train``, ``evaluate_model``,
``answers_at_budgets``), next to the pieces it is built from: the cut protocol and tokenizer facts,
the generation engine protocol, the anytime rollout, the BRPO advantages and the PPO loss (pure
tensors), the grader. Names outside this module are internal and may move (docs/ARCHITECTURE.md);
``tests/test_api.py`` imports each of these.

This module sits at the top of the layers, beside the CLI: importing it loads torch and
transformers. ``import anytime_reasoner`` alone loads nothing.
"""

from __future__ import annotations

from anytime_reasoner.algo.advantages import brpo_diagnostics, summary_advantages, thinking_advantages, thinking_returns
from anytime_reasoner.algo.budgets import BudgetPlan, parse_grid, prior_weights
from anytime_reasoner.algo.losses import ppo_policy_loss
from anytime_reasoner.config import (
    PRESETS,
    AskConfig,
    ConfigError,
    EngineConfig,
    EvalConfig,
    RolloutConfig,
    TrainConfig,
    build_config,
)
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import build_prompt_ids, encode_prompt
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.base import Completion, GenerationEngine, SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.errors import UserError
from anytime_reasoner.eval.ask import AskOptions, BudgetAnswer, answers_at_budgets, iter_answers_at_budgets
from anytime_reasoner.eval.cli import evaluate_model
from anytime_reasoner.eval.runner import EvalResults, EvalSettings, evaluate
from anytime_reasoner.models.engines import build_engine, load_for_inference
from anytime_reasoner.models.loading import load_causal_lm, load_tokenizer
from anytime_reasoner.protocol import AnytimeProtocol, InsertedIds
from anytime_reasoner.rewards.extract import extract_answer
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier
from anytime_reasoner.rollout.anytime import RolloutParams, anytime_rollout
from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.train.build import build_trainer, train
from anytime_reasoner.train.trainer import Trainer

__all__ = [
    # configuration
    "PRESETS",
    "AskConfig",
    "ConfigError",
    "EngineConfig",
    "EvalConfig",
    "RolloutConfig",
    "TrainConfig",
    "UserError",
    "build_config",
    # the cut protocol, tokenizer facts and prompts
    "AnytimeProtocol",
    "InsertedIds",
    "TokenizerCodec",
    "Example",
    "build_prompt_ids",
    "encode_prompt",
    # models and generation engines
    "Completion",
    "GenerationEngine",
    "SamplingParams",
    "TransformersEngine",
    "build_engine",
    "load_causal_lm",
    "load_for_inference",
    "load_tokenizer",
    # budgets, the anytime rollout, BRPO and the loss
    "BudgetPlan",
    "parse_grid",
    "prior_weights",
    "RolloutBatch",
    "RolloutParams",
    "Summary",
    "Thinking",
    "anytime_rollout",
    "brpo_diagnostics",
    "summary_advantages",
    "thinking_advantages",
    "thinking_returns",
    "ppo_policy_loss",
    # grading
    "GraderSettings",
    "MathVerifier",
    "extract_answer",
    # the commands as functions
    "Trainer",
    "build_trainer",
    "train",
    "EvalResults",
    "EvalSettings",
    "evaluate",
    "evaluate_model",
    "AskOptions",
    "BudgetAnswer",
    "answers_at_budgets",
    "iter_answers_at_budgets",
]
