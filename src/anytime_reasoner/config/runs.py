"""The schemas of ``anytime-reasoner demo`` and ``compare``, which share the scale of the embedded-task
experiments (:class:`RunScale`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from anytime_reasoner.config.base import StrictModel, grid_field, split_list
from anytime_reasoner.config.engine import EngineConfig
from anytime_reasoner.config.presets import PRESET_SETS, PRESETS


class RunScale(StrictModel):
    """The scale of the embedded-task experiments shared by ``demo`` and ``compare``: every RL run
    starts from one base model and gets the same questions, G, steps and learning rate."""

    steps: int = Field(36, ge=1, description="RL steps of each method")
    batch_size: int = Field(16, ge=1, description="questions per RL step")
    n: int = Field(8, ge=2, description="thinkings per question (G), the same for every method")
    n_summary: int = Field(4, ge=1, description="summaries per budget (A) for the presets with A > 1")
    max_budget: int = Field(108, ge=4, description="largest thinking budget (tokens) in training")
    n_budget_support: int = Field(4, ge=1, description="budgets of the presets with S > 1")
    summary_max_tokens: int = Field(12, ge=2)
    lr: float = Field(1e-4, gt=0.0)
    eval_size: int = Field(200, ge=1, description="held-out questions")
    eval_budgets: list[int] = Field(
        "24:108:12", validate_default=True, description="evaluation grid (>= 8 budgets), e.g. 24:108:12"
    )
    eval_samples: int = Field(2, ge=1, description="thinkings per held-out question")
    eval_temperature: float = Field(0.6, gt=0.0)
    max_response_len: int | None = Field(
        None,
        ge=1,
        description="loss constant shared by every preset (default: the bound of the S·A summary tree, "
        "b_max + S·A·(inserted + cap): the analogue of the original's 10176)",
    )
    val_every: int = Field(0, ge=0, description="validate each run every N steps (0 = never)")
    val_size: int = Field(64, ge=1, description="validation questions (the first of the held-out set)")
    val_n: int = Field(4, ge=1, description="thinkings per validation question")
    val_n_summary: int = Field(1, ge=1, description="summaries per validation budget")
    cache_dir: str | None = Field(None, description="where the bootstrapped base model is cached")
    base_model: str | None = Field(None, description="start from this model folder instead of bootstrapping")
    bootstrap_seed: int = Field(0, description="seed of the base model's bootstrap (one base model for all RL seeds)")
    jobs: int = Field(2, ge=1, description="train/eval processes run at once (one thread each)")
    async_level: int = Field(
        0, ge=0, le=8, description="trainer.async_level of every run (>= 1: a rollout process each, k steps ahead)"
    )
    engine: EngineConfig = EngineConfig()
    progress: bool = True

    @field_validator("eval_budgets", mode="before")
    @classmethod
    def _eval_grid(cls, value: Any) -> Any:
        grid = grid_field(value, "eval_budgets")
        if len(grid) < 8:
            raise ValueError(f"needs at least 8 budgets, got {len(grid)}")
        return grid


class DemoConfig(RunScale):
    """``anytime-reasoner demo``: bootstrap the tiny base model, train GRPO and AnytimeReasoner from
    it with equal rollouts and steps, evaluate all three on the held-out set at every budget."""

    seed: int = Field(0, description="seed of the RL runs and the evaluation")
    out: str = Field("runs/demo", description="output folder: results.json, results.md, anytime_curves.png, runs")
    ar_preset: Literal["ar-uniform", "ar-linear", "ar-base"] = "ar-uniform"


class CompareConfig(RunScale):
    """``anytime-reasoner compare presets=... seeds=0,1,2``: train every preset from the same base
    model for every seed, evaluate each on the same grid, tabulate mean ± std over seeds."""

    presets: list[str] = Field(
        ["grpo", "ar-linear", "ar-uniform", "ar-base", "grpo+linear", "grpo+decouple", "grpo+vr", "grpo+vr+decouple"],
        description="training presets to compare, or a named list: ablation (the eight, default), baselines "
        "(GRPO, AR and the budget-aware methods)",
    )
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="seeds of the RL runs and the evaluation")
    out: str = Field("runs/compare", description="output folder: results.json, results.md, plots, runs")
    val_every: int = Field(6, ge=0, description="validate each run every N steps (0 = never): learning curves")
    reference: str = Field("grpo", description="preset whose final validation score the learning-efficiency line uses")

    @field_validator("presets", mode="before")
    @classmethod
    def _presets(cls, value: Any) -> Any:
        names = split_list(value)
        if isinstance(names, list):
            return [p for name in names for p in (PRESET_SETS.get(name, [name]) if isinstance(name, str) else [name])]
        return names

    @field_validator("seeds", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return split_list(value)

    @model_validator(mode="after")
    def _known_presets(self) -> CompareConfig:
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            raise ValueError(
                f"presets: unknown {unknown[0]!r}; allowed: {', '.join(PRESETS)}, or a list: {', '.join(PRESET_SETS)}"
            )
        if len(set(self.presets)) != len(self.presets) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("presets: each preset and each seed may appear once")
        return self


class BootstrapConfig(StrictModel):
    """``anytime-reasoner bootstrap``: run the base model's SFT and check it against the shipped weights."""

    seed: int = Field(0, description="bootstrap seed (the package ships the weights of seed 0)")
    out: str = Field("runs/bootstrap", description="folder the rebuilt base model is written to")
    check: bool = Field(True, description="exit 1 when the rebuilt weights differ from the shipped ones (false: report only)")
    progress: bool = True
