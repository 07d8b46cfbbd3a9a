"""The schemas of ``anytime-reasoner eval`` and ``ask``, which share the model and sampling keys
(:class:`GenerationConfig`) and the cut protocol's keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from anytime_reasoner.algo.budgets import BudgetError, prior_weights
from anytime_reasoner.config.base import StrictModel, budget_prompt_field, grid_field, prior_field, protocol_field, split_list
from anytime_reasoner.config.engine import EngineConfig
from anytime_reasoner.protocol import BUDGET_PROMPT, AnytimeProtocol

BENCHMARK_NAMES = ["aime", "amc", "math500", "minerva", "olympiad_bench"]


class GenerationConfig(StrictModel):
    """Model, sampling and cut-protocol keys shared by ``eval``, ``ask`` and ``serve``."""

    model: str = Field(..., description="Hugging Face causal LM (local path or name); tokenizer needs </think> as one token")
    tokenizer: str | None = Field(None, description="tokenizer path if different from the model's")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: EngineConfig = EngineConfig()
    temperature: float = Field(0.6, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    summary_max_tokens: int = protocol_field("summary_max_tokens", ge=1)
    seed: int = 0
    think_start: str = protocol_field("think_start")
    think_end: str = protocol_field("think_end")
    cut_marker: str = protocol_field("cut_marker")
    answer_delimiter: str = protocol_field("answer_delimiter")

    def protocol(self) -> AnytimeProtocol:
        """The cut protocol these keys spell."""
        return AnytimeProtocol.from_config(self)


class EvalConfig(GenerationConfig):
    """``anytime-reasoner eval model=M data=aime,amc budgets=250:8000:250 samples=K``."""

    data: list[str] = Field(BENCHMARK_NAMES, description="benchmarks: names, files or hub datasets")
    data_dir: str | None = Field(None, description="folder with test/*.json (else $ANYTIME_REASONER_DATA)")
    budgets: list[int] = Field("250:8000:250", validate_default=True, description="budget grid: start:stop:step or a comma list")
    samples: int = Field(1, ge=1, description="thinkings per problem (each cut at every budget)")
    prior: str | list[float] = Field("uniform", description="prior of the anytime score: base, uniform, linear, or weights")
    batch_size: int = Field(8, ge=1, description="problems per generation call")
    mode: Literal["anytime", "prompt-budget"] = Field(
        "anytime",
        description="anytime: one thinking cut at every budget; prompt-budget: one generation per budget b with "
        "budget_prompt stating b, capped at b (methods told their budget, e.g. L1)",
    )
    budget_prompt: str = Field(BUDGET_PROMPT, description="prompt-budget mode: sentence appended to the question")
    limit: int | None = Field(None, ge=1, description="first N problems of each benchmark")
    out: str = Field("runs/eval", description="output folder: results.json/.csv/.md and the resume cache")
    max_prompt_tokens: int = Field(1024, ge=1)
    strict: bool = Field(False, description="raise on bad rows instead of skipping them")
    grade_timeout: float = Field(10.0, gt=0.0, description="seconds per graded answer")
    progress: bool = True

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        return grid_field(value, "budgets")

    @field_validator("prior", mode="before")
    @classmethod
    def _prior(cls, value: Any) -> Any:
        return prior_field(value)

    @field_validator("budget_prompt")
    @classmethod
    def _budget_prompt(cls, value: str) -> str:
        return budget_prompt_field(value)

    @model_validator(mode="after")
    def _prior_fits(self) -> EvalConfig:
        try:
            prior_weights(self.prior, self.budgets)
        except BudgetError as err:
            raise ValueError(str(err).replace("budget_probs", "prior")) from None
        return self


class AskConfig(GenerationConfig):
    """``anytime-reasoner ask "QUESTION" model=M budgets=500,1000,2000``."""

    question: str = Field(..., min_length=1, description="the problem to answer")
    show_summary: bool = Field(False, description="also print each sampled summary")
    budgets: list[int] = Field(
        "1000,2000,4000,8000", validate_default=True, description="thinking budgets: comma list or start:stop:step"
    )

    @field_validator("question", mode="before")
    @classmethod
    def _question(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError('is empty; allowed: the problem text, e.g. ask "What is 2+3?" model=M')
        return value

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        return grid_field(value, "budgets")
