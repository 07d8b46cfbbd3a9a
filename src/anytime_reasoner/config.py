"""Typed configuration, validated once at load.

Sources, later ones winning: the model defaults → a named preset (docs/ALGORITHM.md §8) → ``--config FILE``
(YAML) → dotted ``key=value`` overrides. Any problem (unknown key, wrong type, value out of range,
inconsistent budgets) raises :class:`ConfigError` with one line naming the key and what is allowed;
an unknown key or preset also gets a did-you-mean suggestion (docs/ERRORS.md lists every case).

Only pydantic and PyYAML are imported here, so the CLI validates before torch is loaded.

The cut protocol's keys (``think_start``, ``think_end``, ``cut_marker``, ``answer_delimiter``,
``summary_max_tokens``) keep their names in each section that spells them; their defaults and
descriptions come from :mod:`anytime_reasoner.rollout.protocol`, and ``.protocol()`` on a config
builds the :class:`~anytime_reasoner.rollout.protocol.AnytimeProtocol` it spells.

The seed's five rollout knobs keep their names under ``rollout.`` (``rollout.n_summary=4``);
the seed's full spelling ``actor_rollout_ref.rollout.n_summary=4`` is accepted as an alias.

Why the dotted-override parser and merge are written here (about 40 lines) rather than taken from
OmegaConf: ``OmegaConf.from_dotlist`` reads every value as YAML 1.1, so (checked with omegaconf
2.4) ``eval budgets=1:30:1`` becomes the base-60 integer 5401, ``trainer.out=2024`` an int that the
``str`` field then rejects, and a cut marker such as ``rollout.cut_marker=...`` a YAML parse error.
Here overrides stay strings and pydantic coerces them by field type, which keeps every current
behaviour and error message (the CLI tests are the contract); ``--help`` comes from the pydantic
models either way, so OmegaConf would replace only the parser and the merge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from anytime_reasoner.algo.budgets import PRIORS, BudgetError, BudgetPlan, parse_grid
from anytime_reasoner.data.prompts import BUDGET_PROMPT
from anytime_reasoner.rollout import protocol as _protocol
from anytime_reasoner.rollout.protocol import AnytimeProtocol


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _split_list(value: Any) -> Any:
    """Let ``key=a,b,c`` on the command line fill a list field."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return [p.strip() for p in text.split(",") if p.strip()]
    return value


def _grid_field(value: Any, field: str, optional: bool = False) -> Any:
    """A budget grid (``250:8000:250``, ``500,1000``, a list) → list of ints; the error names no field
    (pydantic prefixes the key)."""
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))):
        return None
    try:
        return list(parse_grid(value, field=field))
    except BudgetError as err:
        raise ValueError(str(err).split(": ", 1)[-1]) from None


def _prior_field(value: Any) -> Any:
    """A prior name or explicit weights (``1,2,3,4``)."""
    if isinstance(value, str):
        if "," in value or value.strip().startswith("["):
            return _split_list(value)
        if value not in PRIORS:
            raise ValueError(f"allowed: {', '.join(PRIORS)}, or a list of non-negative weights (e.g. 1,2,3,4)")
    return value


def _protocol_field(name: str, **constraints: Any) -> Any:
    """A config key spelling an :class:`AnytimeProtocol` field: its default and description come
    from :mod:`anytime_reasoner.rollout.protocol`."""
    return Field(getattr(_protocol, name.upper()), description=_protocol.DESCRIPTIONS[name], **constraints)


# --------------------------------------------------------------------------------------------
# Training configuration
# --------------------------------------------------------------------------------------------


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ModelConfig(_Strict):
    path: str = Field("tiny", description="Hugging Face model name or local path; 'tiny' = embedded default")
    tokenizer: str | None = Field(None, description="tokenizer path if different from the model's")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="compute dtype: forward/backward run in it (autocast, or FSDP2 mixed precision); weights, "
        "gradients and optimizer state stay float32. float16 is refused (no gradient scaler)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    attention: Literal["auto", "dense", "flex", "tree"] = Field(
        "auto",
        description="packed-row attention: tree (only the pairs the tree rule allows, sdpa per segment group), "
        "dense (a 4-D mask over every pair), flex (FlexAttention BlockMask, CUDA); auto: flex on CUDA, else tree",
    )
    activation_checkpointing: bool = Field(False, description="recompute each decoder layer in backward (saves memory)")
    lora_rank: int = Field(0, ge=0, description="LoRA rank (0 = train every weight); needs the [lora] extra")
    lora_alpha: float = Field(32.0, gt=0.0, description="LoRA scaling numerator (scale = alpha / rank)")
    lora_target_modules: list[str] = Field(LORA_TARGETS, min_length=1, description="module names that get adapters")
    think_start: str = _protocol_field("think_start")
    think_end: str = _protocol_field("think_end")

    @field_validator("dtype", mode="before")
    @classmethod
    def _train_dtype(cls, value: Any) -> Any:
        if value == "float16":
            raise ValueError(
                "float16 is not trained here: it needs a gradient scaler, which this trainer does not use; allowed: float32, bfloat16"
            )
        return value

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        return _split_list(value)


class EngineConfig(_Strict):
    """The generation backend (``engine.*``): transformers ``generate`` or vLLM (``engine.vllm``)."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf: transformers generate; vllm: needs the [vllm] extra")
    block_size: int | None = Field(
        None, ge=16, multiple_of=16, description="vllm: KV block (tokens); prefix caching reuses whole blocks (default 32 on CPU)"
    )
    kv_cache_gib: float | None = Field(
        None, gt=0.0, description="vllm: KV cache size (default: 1 on CPU; on GPU the memory share)"
    )
    gpu_memory_utilization: float = Field(0.4, gt=0.0, le=1.0, description="vllm: GPU memory share (weights + KV cache)")
    enforce_eager: bool = Field(False, description="vllm: no CUDA graphs / compilation (faster start, slower decode)")
    max_model_len: int | None = Field(None, ge=16, description="vllm: longest sequence (default: the model's context)")
    max_num_seqs: int | None = Field(None, ge=1, description="vllm: sequences decoded at once (default: vLLM's)")
    sleep: bool = Field(True, description="vllm on GPU: free the KV cache and offload weights while training")


class RolloutConfig(_Strict):
    n: int = Field(8, ge=1, description="thinkings sampled per question (G)")
    n_summary: int = Field(4, ge=1, description="summaries sampled per budget (A)")
    summary_method: Literal["grpo", "brpo"] = "brpo"
    n_budget_support: int = Field(4, ge=1, description="number of evenly spaced budgets (m)")
    budget_probs: str | list[float] = Field(
        "uniform", description="prior over budgets: base, uniform, linear, or explicit weights"
    )
    variance_reduction: Literal["brpo", "v1only", "v2only", "none"] = "brpo"
    max_budget: int = Field(8000, ge=1, description="largest thinking budget b_m (seed: max_gen_len)")
    budgets: list[int] | None = Field(None, description="explicit increasing budgets; overrides n_budget_support")
    summary_max_tokens: int = _protocol_field("summary_max_tokens", ge=1)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    cut_marker: str = _protocol_field("cut_marker")
    answer_delimiter: str = _protocol_field("answer_delimiter")

    @field_validator("budgets", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        return _grid_field(value, "budgets", optional=True)

    @field_validator("budget_probs", mode="before")
    @classmethod
    def _probs(cls, value: Any) -> Any:
        return _prior_field(value)

    @model_validator(mode="after")
    def _plan_is_valid(self) -> RolloutConfig:
        try:
            self.plan()
        except BudgetError as err:
            raise ValueError(str(err)) from None
        return self

    def plan(self) -> BudgetPlan:
        """The budget support and normalized prior this rollout uses."""
        return BudgetPlan.build(
            max_budget=self.max_budget,
            n_support=self.n_budget_support,
            budgets=self.budgets,
            prior=self.budget_probs,
        )

    def protocol(self, model: ModelConfig | None = None) -> AnytimeProtocol:
        """The cut protocol of this rollout; the think markers are ``model``'s (default ones without)."""
        return AnytimeProtocol.from_config(*([model] if model is not None else []), self)


def _cap_schedule_field(value: Any) -> Any:
    """``1:1.0,13:0.75`` (or a list of pairs) → ``[[1, 1.0], [13, 0.75]]``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    items = _split_list(value) if isinstance(value, str) else value
    pairs = []
    for item in items:
        if isinstance(item, str):
            step, sep, frac = item.partition(":")
            if not sep:
                raise ValueError(f"{item!r}: each entry is STEP:FRACTION, e.g. 1:1.0,13:0.75,25:0.5")
            item = [step, frac]
        try:
            pairs.append([int(item[0]), float(item[1])])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{item!r}: each entry is STEP:FRACTION, e.g. 1:1.0,13:0.75,25:0.5") from None
    steps = [p[0] for p in pairs]
    if not pairs or steps[0] != 1 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("steps must start at 1 and increase, e.g. 1:1.0,13:0.75,25:0.5")
    if any(not 0.0 < p[1] <= 1.0 for p in pairs):
        raise ValueError("each fraction must be in (0, 1]")
    return pairs


def _budget_prompt_field(value: str) -> str:
    """A budget sentence: ``{n}`` (the budget) and no other field."""
    try:
        value.format(n=1)
    except (KeyError, IndexError, ValueError):
        raise ValueError("must hold {n} and no other {field}, e.g. 'Think for {n} tokens.'") from None
    if "{n}" not in value:
        raise ValueError("must hold {n}, e.g. 'Think for {n} tokens.'")
    return value


class LengthConfig(_Strict):
    """The pieces of the budget-aware RL methods (``length.*``; docs/BASELINES.md): a length-aware
    reward term, a budget stated in the prompt, a cap schedule, DAPO's overlong shaping. Lengths
    count thinking tokens; fractions are of the step's largest budget (``rollout.max_budget`` scaled
    by the cap schedule), so a preset means the same at any scale."""

    reward: Literal["none", "l1-exact", "l1-max", "shorter-better"] = Field(
        "none", description="length-aware reward: L1 (LCPO) Exact or Max, or ShorterBetter; none = correctness only"
    )
    l1_alpha: float | None = Field(
        None, ge=0.0, description="L1's alpha per token (default: the paper's 0.0003 at 4,000 tokens, scaled to the budget)"
    )
    l1_delta: float = Field(0.5, description="L1-Max's delta")
    target_min: float = Field(0.025, gt=0.0, le=1.0, description="L1 targets N ~ U[min, max] x the budget (paper: 100-4000)")
    target_max: float = Field(1.0, gt=0.0, le=1.0, description="upper end of the L1 target range (fraction of the budget)")
    prompt_budget: bool = Field(False, description="state the target N in the prompt (budget_prompt appended to the question)")
    budget_prompt: str = Field(BUDGET_PROMPT, description="the budget sentence; {n} is the target")
    sb_alpha: float = Field(2.0, gt=0.0, description="ShorterBetter's alpha (correctness weight)")
    sb_beta: float | None = Field(
        None, ge=0.0, description="ShorterBetter's beta per token (default: the paper's 0.001 at 4,000 tokens, scaled)"
    )
    hard_limit: bool = Field(
        False, description="ThinkPrune: reward 0 for a thinking not closed within the cap (no answer trained)"
    )
    cap_schedule: list[tuple[int, float]] | None = Field(
        None,
        description="thinking cap per step as STEP:FRACTION of every budget, e.g. 1:1.0,13:0.75,25:0.5 (ThinkPrune; E1: 1:0.5)",
    )
    overlong_cache: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="DAPO soft overlong punishment over the last fraction of the cap (paper 4096/20480 = 0.2; 0 = off)",
    )
    overlong_filter: bool = Field(False, description="DAPO overlong filtering: thinkings cut at the cap get no loss")

    @field_validator("cap_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        return _cap_schedule_field(value)

    @field_validator("budget_prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        return _budget_prompt_field(value)

    @model_validator(mode="after")
    def _range(self) -> LengthConfig:
        if self.target_min > self.target_max:
            raise ValueError(f"target_min: {self.target_min} is above target_max {self.target_max}")
        if self.reward in ("l1-exact", "l1-max") and not self.prompt_budget:
            raise ValueError(
                f"reward: {self.reward} rewards the distance to a target the prompt states; set length.prompt_budget=true"
            )
        return self

    def cap_fraction(self, step: int) -> float:
        """The fraction of every budget that caps the thinking at ``step`` (1 without a schedule)."""
        fraction = 1.0
        for start, frac in self.cap_schedule or []:
            if step >= start:
                fraction = frac
        return fraction


class PPOConfig(_Strict):
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0)
    loss_agg: Literal["constant", "token-mean"] = Field(
        "constant", description="constant: token-loss sum / (rows × max_response_len) (Dr. GRPO)"
    )
    max_response_len: int | None = Field(
        None,
        ge=1,
        description="the constant of loss_agg=constant; default: the longest packed response of the rollout "
        "config (b_max + S·A·(inserted + summary cap)); the original used 10176 for every preset",
    )
    ppo_epochs: int = Field(1, ge=1)
    ppo_mini_batch_size: int = Field(32, ge=1, description="questions per optimizer step")
    ppo_max_token_len: int = Field(30720, ge=64, description="token budget of one micro-batch")
    multi_tree_rows: bool = Field(
        True,
        description="several rollout trees per row (document ids in the tree mask, first-fit into rows as wide as the "
        "longest), so micro-batches carry little padding; false: one tree per row, right-padded",
    )
    lr: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (the original's 0.01)")
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0.0)
    tis_cap: float = Field(
        0.0,
        ge=0.0,
        description="truncated importance sampling: weight each token's loss by min(pi_old / pi_rollout, tis_cap) with "
        "the engine's log-probs (0 = off; verl and TRL use 2)",
    )

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, value: Any) -> Any:
        return _split_list(value)


class DataConfig(_Strict):
    train: str = Field("synthetic", description="'synthetic', a file, a name in data_dir, or a hub dataset")
    val: str = Field("synthetic", description="validation set, same forms as train")
    data_dir: str | None = Field(None, description="folder holding train/ and test/ JSON files")
    max_prompt_tokens: int = Field(1024, ge=1)
    val_size: int = Field(256, ge=1, description="held-out questions used for validation")


class TrainerConfig(_Strict):
    steps: int = Field(100, ge=0, description="RL steps (0 = only evaluate)")
    batch_size: int = Field(64, ge=1, description="questions per RL step")
    val_every: int = Field(10, ge=0, description="validate every N steps (0 = never)")
    val_budgets: list[int] | None = Field(None, description="validation budgets (default: the rollout's)")
    val_n: int = Field(8, ge=1, description="thinkings per validation question (the original's 8)")
    val_n_summary: int = Field(4, ge=1, description="summaries per validation budget (the original's 4)")
    val_temperature: float = Field(0.6, gt=0.0)
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    out: str = Field("runs/anytime", description="output folder: metrics.jsonl, checkpoints, final model")
    resume: Literal["auto", "never", "force"] = Field(
        "auto",
        description="auto: continue from the newest complete checkpoint in out (refused if the config changes the "
        "training); force: continue even so; never: start over",
    )
    keep_checkpoints: int = Field(0, ge=0, description="keep only the newest K checkpoints (0 = keep all)")
    max_bad_steps: int = Field(
        8, ge=1, description="stop (saving a checkpoint) after this many optimizer steps in a row with a non-finite gradient"
    )
    seed: int = 0
    loggers: list[Literal["jsonl", "tensorboard", "wandb"]] = ["jsonl"]
    progress: bool = True

    @field_validator("loggers", mode="before")
    @classmethod
    def _loggers(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("val_budgets", mode="before")
    @classmethod
    def _val_grid(cls, value: Any) -> Any:
        return _grid_field(value, "val_budgets", optional=True)


class TrainConfig(_Strict):
    """Everything ``anytime-reasoner train`` needs."""

    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    length: LengthConfig = LengthConfig()
    ppo: PPOConfig = PPOConfig()
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="before")
    @classmethod
    def _model_shorthand(cls, data: Any) -> Any:
        """``model=PATH_OR_NAME`` is short for ``model.path=PATH_OR_NAME``."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": {"path": data["model"]}}
        return data

    @model_validator(mode="after")
    def _caps_fit(self) -> TrainConfig:
        plan = self.rollout.plan()
        for _, fraction in self.length.cap_schedule or []:
            try:
                plan.scaled(fraction)
            except BudgetError as err:
                raise ValueError(f"{err}; budgets {list(plan.budgets)} x {fraction} collide") from None
        return self

    def protocol(self) -> AnytimeProtocol:
        """The cut protocol: think markers from ``model``, the rest from ``rollout``."""
        return self.rollout.protocol(self.model)

    def plan_at(self, step: int) -> BudgetPlan:
        """The training budgets of ``step``: the rollout's, scaled by the cap schedule."""
        return self.rollout.plan().scaled(self.length.cap_fraction(step))


# --------------------------------------------------------------------------------------------
# Other subcommands
# --------------------------------------------------------------------------------------------


class GradeConfig(_Strict):
    """``anytime-reasoner grade input=F.jsonl output=G.jsonl``."""

    input: str = Field(..., description="JSONL with 'response' and 'ground_truth' per line")
    output: str = Field(..., description="JSONL written with 'correct' and 'extracted' per line")
    timeout: float = Field(10.0, gt=0.0, description="seconds allowed per item before it counts as wrong")
    workers: int = Field(2, ge=1, description="grading processes")
    progress: bool = True


# -- data, eval, plot, ask (anytime_reasoner.data / anytime_reasoner.eval) ---------------------

BENCHMARK_NAMES = ["aime", "amc", "math500", "minerva", "olympiad_bench"]


class DataBuildConfig(_Strict):
    """``anytime-reasoner data SOURCE ... out=DIR``."""

    sources: list[str] = Field(
        ...,
        min_length=1,
        description="names (aime, amc, math500, minerva, olympiad_bench, "
        "train/aime, train/math), .json/.jsonl/.parquet files, or hub datasets owner/name",
    )
    out: str = Field("data", description="folder (one <source>.jsonl each) or a .jsonl file (all sources merged)")
    data_dir: str | None = Field(None, description="folder with test/ and train/ JSON (else $ANYTIME_REASONER_DATA)")
    tokenizer: str | None = Field(None, description="tokenizer path: drop prompts over max_prompt_tokens")
    max_prompt_tokens: int = Field(1024, ge=1, description="templated prompt length cap (needs tokenizer)")
    strict: bool = Field(False, description="raise on the first bad row instead of counting and skipping it")
    split: str = Field("train", description="split of a hub dataset")
    parquet: bool = Field(True, description="also write .parquet when pyarrow is installed")

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [p for v in value for p in _split_list(v)]
        return _split_list(value)


class _Generation(_Strict):
    """Model and sampling keys shared by ``eval`` and ``ask``."""

    model: str = Field(..., description="Hugging Face causal LM (local path or name); tokenizer needs </think> as one token")
    tokenizer: str | None = Field(None, description="tokenizer path if different from the model's")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: EngineConfig = EngineConfig()
    temperature: float = Field(0.6, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    summary_max_tokens: int = _protocol_field("summary_max_tokens", ge=1)
    seed: int = 0
    think_start: str = _protocol_field("think_start")
    think_end: str = _protocol_field("think_end")
    cut_marker: str = _protocol_field("cut_marker")
    answer_delimiter: str = _protocol_field("answer_delimiter")

    def protocol(self) -> AnytimeProtocol:
        """The cut protocol these keys spell."""
        return AnytimeProtocol.from_config(self)


class EvalConfig(_Generation):
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
        return _split_list(value)

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        return _grid_field(value, "budgets")

    @field_validator("prior", mode="before")
    @classmethod
    def _prior(cls, value: Any) -> Any:
        return _prior_field(value)

    @field_validator("budget_prompt")
    @classmethod
    def _budget_prompt(cls, value: str) -> str:
        return _budget_prompt_field(value)

    @model_validator(mode="after")
    def _prior_fits(self) -> EvalConfig:
        from anytime_reasoner.algo.budgets import prior_weights

        try:
            prior_weights(self.prior, self.budgets)
        except BudgetError as err:
            raise ValueError(str(err).replace("budget_probs", "prior")) from None
        return self


class AskConfig(_Generation):
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
        return _grid_field(value, "budgets")


class PlotConfig(_Strict):
    """``anytime-reasoner plot a.json b.json ... out=FIG.png``."""

    inputs: list[str] = Field(..., min_length=1, description="results files (eval's results.json or the demo's)")
    out: str = Field("anytime.png", description="PNG written")
    labels: list[str] | None = Field(None, description="one legend label per input file (default: model / file name)")
    title: str | None = Field(None, description="figure title")

    @field_validator("inputs", "labels", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [p for v in value for p in _split_list(v)]
        return _split_list(value)


class RunScale(_Strict):
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
    engine: EngineConfig = EngineConfig()
    progress: bool = True

    @field_validator("eval_budgets", mode="before")
    @classmethod
    def _eval_grid(cls, value: Any) -> Any:
        grid = _grid_field(value, "eval_budgets")
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
        names = _split_list(value)
        if isinstance(names, list):
            return [p for name in names for p in (PRESET_SETS.get(name, [name]) if isinstance(name, str) else [name])]
        return names

    @field_validator("seeds", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

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


# --------------------------------------------------------------------------------------------
# Presets: the seed's eight experiments (docs/ALGORITHM.md §8) and the budget-aware methods (docs/BASELINES.md).
# --------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    name: {
        "rollout": dict(
            n_summary=a,
            summary_method=sm,
            n_budget_support=s,
            budget_probs=bp,
            variance_reduction=vr,
        )
    }
    for name, (a, sm, s, bp, vr) in {
        "grpo": (1, "grpo", 1, "base", "v2only"),
        "ar-linear": (4, "brpo", 4, "linear", "brpo"),
        "ar-uniform": (4, "brpo", 4, "uniform", "brpo"),
        "ar-base": (4, "brpo", 4, "base", "brpo"),
        "grpo+linear": (1, "grpo", 4, "linear", "v2only"),
        "grpo+decouple": (4, "brpo", 4, "base", "v2only"),
        "grpo+vr": (1, "grpo", 4, "base", "brpo"),
        "grpo+vr+decouple": (4, "brpo", 4, "base", "brpo"),
    }.items()
}

# The budget-aware RL methods (docs/BASELINES.md): each is GRPO's rollout (one budget, one summary)
# plus the pieces of ``length.*`` its paper specifies.
BASELINE_PIECES: dict[str, dict[str, Any]] = {
    "l1-exact": {"reward": "l1-exact", "prompt_budget": True},
    "l1-max": {"reward": "l1-max", "prompt_budget": True, "budget_prompt": "Think for maximum {n} tokens."},
    "e1": {"cap_schedule": "1:0.5"},
    "thinkprune": {"hard_limit": True, "cap_schedule": "1:1.0,13:0.75,25:0.5"},
    "shorterbetter": {"reward": "shorter-better"},
    "grpo+overlong": {"overlong_cache": 0.2},
}
PRESETS.update(
    {name: {"rollout": dict(PRESETS["grpo"]["rollout"]), "length": pieces} for name, pieces in BASELINE_PIECES.items()}
)

# Named lists of presets for ``compare presets=NAME``.
PRESET_SETS: dict[str, list[str]] = {
    "ablation": ["grpo", "ar-linear", "ar-uniform", "ar-base", "grpo+linear", "grpo+decouple", "grpo+vr", "grpo+vr+decouple"],
    "baselines": ["grpo", "ar-uniform", "ar-linear", *BASELINE_PIECES],
}

SEED_ALIASES = {"actor_rollout_ref.rollout.": "rollout."}


def _did_you_mean(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    from anytime_reasoner.checks import did_you_mean

    return did_you_mean(word, list(choices))


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["rollout.n=8", "trainer.out=x"]`` → nested dict of strings (pydantic coerces types)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{item!r}: overrides are written key=value (e.g. rollout.n=8)")
        for old, new in SEED_ALIASES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        _set_dotted(tree, key, value)
    return tree


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 without base-60 integers: a budget grid such as ``1:30:1`` stays a string."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if not (tag.endswith(":int") or tag.endswith(":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern in (
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+)$"),
    (
        "tag:yaml.org,2002:float",
        r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$",
    ),
):
    _YamlLoader.add_implicit_resolver(_tag, re.compile(_pattern), list("-+0123456789."))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--config: {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of keys to values")
    return data


def build_config(
    cls: type[ConfigT],
    *,
    preset: str | None = None,
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> ConfigT:
    """Merge defaults, preset, files and overrides into ``cls``; raise :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown {preset!r}{_did_you_mean(preset, PRESETS)}; allowed: {', '.join(PRESETS)}")
        data = deep_merge(data, PRESETS[preset])
    for path in files:
        data = deep_merge(data, read_yaml(path))
    if isinstance(overrides, Mapping):
        data = deep_merge(data, overrides)
    else:
        data = deep_merge(data, parse_overrides(overrides))
    return validate(cls, data)


def validate(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_error(cls, err)) from None


def format_error(cls: type[BaseModel], err: ValidationError) -> str:
    """One line for the first problem: the dotted key, what is wrong, what is allowed."""
    first = err.errors()[0]
    # Drop pydantic's union/validator tags (e.g. "literal['a','b']", "function-after[...]").
    loc = [str(p) for p in first["loc"] if not any(c in str(p) for c in "[(")]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        allowed = _fields_at(cls, loc[:-1])
        where = f" in '{parent}'" if parent else ""
        suggestion = _suggest_key(cls, loc)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        return f"{key}: unknown key{where}{hint}; allowed: {', '.join(allowed)}"
    if first["type"] == "missing":
        return f"{key}: required, not given"
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None or repr(got) in msg else f" (got {got!r})"
    if first["type"] == "value_error" and isinstance(got, dict):
        # A cross-field check of a whole section: its message starts with the field it names.
        return f"{key}.{msg}" if key else msg
    return f"{key}: {msg}{shown}"


def _suggest_key(cls: type[BaseModel], loc: Sequence[str]) -> str | None:
    """The dotted key an unknown ``loc`` probably meant: a close sibling (``rollout.n_sumary`` →
    ``rollout.n_summary``), else the same or a close leaf name in another section (``trainer.lr``
    → ``ppo.lr``)."""
    from difflib import get_close_matches

    name, parent = loc[-1], list(loc[:-1])
    near = get_close_matches(name, _fields_at(cls, parent), n=1, cutoff=0.6)
    if near:
        return ".".join([*parent, near[0]])
    leaves = _leaf_keys(cls)
    same = [k for k in leaves if k.rsplit(".", 1)[-1] == name]
    if same:
        return same[0]
    by_leaf: dict[str, str] = {}
    for k in leaves:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], k)
    close = get_close_matches(name, list(by_leaf), n=1, cutoff=0.8)
    return by_leaf[close[0]] if close else None


def _leaf_keys(model: Any, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config model (``rollout.n``, ``ppo.lr``, ...)."""
    keys: list[str] = []
    for name, field in getattr(model, "model_fields", {}).items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _leaf_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _fields_at(cls: type[BaseModel], path: Sequence[str]) -> list[str]:
    model: Any = cls
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def dump(config: BaseModel) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict of a config (for run folders and results files)."""
    return config.model_dump(mode="json")
