"""The schema of ``anytime-reasoner train`` (:class:`TrainConfig`), one section per concern:
``model``, ``engine``, ``data``, ``rollout``, ``length``, ``ppo``, ``trainer``.

The cut protocol's keys (``think_start``, ``think_end``, ``cut_marker``, ``answer_delimiter``,
``summary_max_tokens``) keep their names in each section that spells them; their defaults and
descriptions come from :mod:`anytime_reasoner.protocol`, and ``.protocol()`` builds the
:class:`~anytime_reasoner.protocol.AnytimeProtocol` they spell. The seed's five rollout knobs keep
their names under ``rollout.``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from anytime_reasoner.algo.budgets import BudgetError, BudgetPlan
from anytime_reasoner.config.base import (
    StrictModel,
    budget_prompt_field,
    cap_schedule_field,
    flatten,
    grid_field,
    prior_field,
    protocol_field,
    split_list,
)
from anytime_reasoner.config.engine import EngineConfig
from anytime_reasoner.config.files import read_yaml
from anytime_reasoner.protocol import BUDGET_PROMPT, AnytimeProtocol

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ModelConfig(StrictModel):
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
    think_start: str = protocol_field("think_start")
    think_end: str = protocol_field("think_end")

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
        return split_list(value)


class RolloutConfig(StrictModel):
    n: int = Field(8, ge=1, description="thinkings sampled per question (G)")
    n_summary: int = Field(4, ge=1, description="summaries sampled per budget (A)")
    summary_method: Literal["grpo", "brpo"] = "brpo"
    n_budget_support: int = Field(4, ge=1, description="number of evenly spaced budgets (m)")
    budget_probs: str | list[float] = Field(
        "uniform", description="prior over budgets: base, uniform, linear, or explicit weights"
    )
    variance_reduction: Literal["brpo", "v1only", "v2only", "none"] = "brpo"
    advantage_norm: Literal["none", "std"] = Field(
        "none",
        description="std: divide advantages by the group's standard deviation (GRPO as DeepSeekMath, and the peer "
        "methods built on it); none: no division (the seed's, Dr. GRPO)",
    )
    dynamic_sampling: bool = Field(
        False,
        description="DAPO's dynamic sampling: drop the questions whose G thinkings are all right or all wrong, and "
        "roll out more questions until batch_size remain (at most max_sampling_rounds rollouts per step)",
    )
    max_sampling_rounds: int = Field(
        10, ge=1, description="rollouts per step at most under dynamic_sampling (DAPO's max_num_gen_batches)"
    )
    max_budget: int = Field(8000, ge=1, description="largest thinking budget b_m (seed: max_gen_len)")
    budgets: list[int] | None = Field(None, description="explicit increasing budgets; overrides n_budget_support")
    summary_max_tokens: int = protocol_field("summary_max_tokens", ge=1)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    one_pass: bool | Literal["auto"] = Field(
        "auto",
        description="sample the answer at each thinking's last cut in the thinking's own pass (the delimiter or the cut "
        "text forced inside decoding) where the engine can (engine.backend=hf); auto: when that is every summary of "
        "the rollout (one budget, n_summary=1: GRPO); false: the thinking, then every answer from its encoded prefix",
    )
    cut_marker: str = protocol_field("cut_marker")
    answer_delimiter: str = protocol_field("answer_delimiter")

    @field_validator("budgets", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        return grid_field(value, "budgets", optional=True)

    @field_validator("one_pass", mode="before")
    @classmethod
    def _one_pass(cls, value: Any) -> Any:
        words = {"auto": "auto", "true": True, "false": False}
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError(f"allowed: auto, true, false (got {value!r})")

    @field_validator("budget_probs", mode="before")
    @classmethod
    def _probs(cls, value: Any) -> Any:
        return prior_field(value)

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


class LengthConfig(StrictModel):
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
        False,
        description="no answer without a closed thinking: a thinking not closed within the cap scores as wrong and its "
        "forced answer is not trained (ThinkPrune's limit; L1, ShorterBetter and DAPO's truncated responses)",
    )
    incorrect_reward: float = Field(
        0.0, le=0.0, description="added to the reward of a wrong or unanswered response (DAPO's -1: rewards +1/-1)"
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
        return cap_schedule_field(value)

    @field_validator("budget_prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        return budget_prompt_field(value)

    @model_validator(mode="after")
    def _range(self) -> LengthConfig:
        if self.target_min > self.target_max:
            raise ValueError(f"target_min: {self.target_min} is above target_max {self.target_max}")
        if self.reward in ("l1-exact", "l1-max") and not self.prompt_budget:
            raise ValueError(
                f"reward: {self.reward} rewards the distance to a target the prompt states; set length.prompt_budget=true"
            )
        return self

    def shaping_knobs(self) -> dict[str, Any]:
        """The reward terms' knobs, for ``algo.length_rewards.LengthShaping.at_budget`` (which fills
        in the per-token defaults left ``None``)."""
        return self.model_dump(
            include={
                "reward",
                "l1_alpha",
                "l1_delta",
                "sb_alpha",
                "sb_beta",
                "hard_limit",
                "overlong_cache",
                "overlong_filter",
                "incorrect_reward",
            }
        )

    def cap_fraction(self, step: int) -> float:
        """The fraction of every budget that caps the thinking at ``step`` (1 without a schedule)."""
        fraction = 1.0
        for start, frac in self.cap_schedule or []:
            if step >= start:
                fraction = frac
        return fraction


class PPOConfig(StrictModel):
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0)
    clip_eps_high: float | None = Field(
        None, gt=0.0, description="upper clip range (DAPO's clip-higher: 0.28); default: clip_eps (symmetric)"
    )
    loss_agg: Literal["constant", "token-mean"] = Field(
        "constant",
        description="constant: token-loss sum / (rows × max_response_len) (Dr. GRPO); token-mean: / trainable tokens "
        "of the mini-batch (DAPO; verl's masked mean)",
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
    share_prompts: bool = Field(
        True,
        description="with multi_tree_rows, the trees of one prompt (a question's G thinkings) go into a row together and "
        "hold the prompt once, the others attending to it (the same log-probs; fewer tokens: in a GRPO batch of short "
        "responses the prompt copies are about half the tokens); false: every tree carries its own prompt",
    )
    lr: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (the original's 0.01)")
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0.0)
    tis_cap: float = Field(
        0.0,
        ge=0.0,
        description="truncated importance sampling: weight each token's loss by min(pi_old / pi_rollout, tis_cap) with "
        "the engine's log-probs (0 = off; verl and TRL use 2; trainer.async_level >= 1 sets 2 unless ppo.decoupled)",
    )
    decoupled: bool = Field(
        False,
        description="AReaL's decoupled PPO objective: the clipped ratio is taken against the trainer's policy when the "
        "batch is trained (proximal), and each token's loss is weighted by pi_proximal / pi_behaviour (the policy that "
        "sampled); tokens whose weight exceeds behaviour_weight_cap are dropped. Excludes tis_cap",
    )
    behaviour_weight_cap: float | None = Field(
        None,
        gt=1.0,
        description="ppo.decoupled: drop tokens whose pi_proximal / pi_behaviour exceeds this (AReaL's "
        "behav_imp_weight_cap; None = keep all)",
    )

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, value: Any) -> Any:
        return split_list(value)

    @model_validator(mode="after")
    def _one_correction(self) -> PPOConfig:
        if self.decoupled and self.tis_cap > 0:
            raise ValueError("decoupled: excludes ppo.tis_cap (both weight tokens by the behaviour ratio); set one")
        if self.behaviour_weight_cap is not None and not self.decoupled:
            raise ValueError("behaviour_weight_cap: applies to ppo.decoupled=true only (TIS truncates at ppo.tis_cap)")
        return self


class DataConfig(StrictModel):
    train: str = Field("synthetic", description="'synthetic', a file, a name in data_dir, or a hub dataset")
    val: str = Field("synthetic", description="validation set, same forms as train")
    data_dir: str | None = Field(None, description="folder holding train/ and test/ JSON files")
    max_prompt_tokens: int = Field(1024, ge=1)
    val_size: int = Field(256, ge=1, description="held-out questions used for validation")


class TrainerConfig(StrictModel):
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
    async_level: int = Field(
        0,
        ge=0,
        le=8,
        description="asynchronous rollouts: step t trains on rollouts sampled by the policy after step t-1-k (a fixed "
        "lag, so runs are deterministic and resume exactly), generated while the trainer trains; 0 = synchronous",
    )
    rollout_placement: Literal["auto", "inline", "process"] = Field(
        "auto",
        description="where training rollouts are sampled: inline (this process, async_level=0 only) or process (a "
        "rollout worker process on this machine, fed each new policy); auto: inline at async_level=0, else process",
    )
    weight_transfer: Literal["file", "broadcast"] = Field(
        "file",
        description="how a rollout process gets each policy: file (safetensors under trainer.out/rollout_weights) or "
        "broadcast (a 2-member gloo group on CPU, nccl on GPU, between the trainer and the worker)",
    )
    rollout_device: str | None = Field(
        None, description="the rollout process's device (e.g. cuda:1: separate inference GPUs); default: model.device"
    )
    rollout_threads: int = Field(
        0,
        ge=0,
        description="torch threads of the rollout process (0: on CPU half the trainer's, which keeps the rest; N: N, "
        "and the trainer keeps all of its own)",
    )
    max_worker_restarts: int = Field(
        2, ge=0, description="restart a rollout process that dies at most this many times, then stop with one line"
    )
    seed: int = 0
    loggers: list[Literal["jsonl", "tensorboard", "wandb"]] = ["jsonl"]
    progress: bool = True

    @field_validator("loggers", mode="before")
    @classmethod
    def _loggers(cls, value: Any) -> Any:
        return split_list(value)

    def placement(self) -> Literal["inline", "process"]:
        """Where training rollouts are sampled (``rollout_placement`` with ``auto`` resolved)."""
        if self.rollout_placement == "auto":
            return "process" if self.async_level else "inline"
        return self.rollout_placement

    @field_validator("val_budgets", mode="before")
    @classmethod
    def _val_grid(cls, value: Any) -> Any:
        return grid_field(value, "val_budgets", optional=True)


EMBEDDED_MODEL = "tiny"
EMBEDDED_SCALE_FILE = files("anytime_reasoner") / "configs" / "tiny-synthetic.yaml"
NOT_SCALE = ("model.path", "model.device", "trainer.out")  # what the file names beside the scale


def _embedded_scale() -> dict[str, Any]:
    """``configs/tiny-synthetic.yaml`` less the model path, device and output folder: the scale of the
    embedded task (108-token budgets, 12-token summaries, its learning rate, batch and validation)."""
    scale = read_yaml(str(EMBEDDED_SCALE_FILE))
    for key in NOT_SCALE:
        section, name = key.split(".")
        scale.get(section, {}).pop(name, None)
    return {section: values for section, values in scale.items() if values}


EMBEDDED_SCALE = _embedded_scale()
# The keys that size a run's sequences: giving one of them means choosing the scale.
SCALE_KEYS = frozenset(
    {"rollout.max_budget", "rollout.budgets", "rollout.summary_max_tokens", "trainer.val_budgets", "ppo.max_response_len"}
)


def with_embedded_scale(data: Any) -> Any:
    """``data`` (a raw training config) with the embedded task's scale under it when the model is
    the embedded one and no key that sizes the sequences (:data:`SCALE_KEYS`) is given. The defaults
    are the paper's (8,000-token budgets), which do not fit the embedded model's 1,024 positions, so a
    first ``train PRESET`` runs at the scale the embedded model can; every key given still wins (e.g.
    ``trainer.steps=2``). A given scale key means the user chose the scale: then nothing is filled in."""
    if not isinstance(data, dict):
        return data
    model = data.get("model", {})
    path = model.get("path", EMBEDDED_MODEL) if isinstance(model, dict) else model
    if path != EMBEDDED_MODEL or SCALE_KEYS & set(flatten(data)):
        return data
    merged = {section: dict(values) for section, values in EMBEDDED_SCALE.items()}
    for section, values in data.items():
        merged[section] = {**merged.get(section, {}), **values} if isinstance(values, dict) else values
    return merged


class TrainConfig(StrictModel):
    """Everything ``anytime-reasoner train`` needs. With the embedded model (``model.path=tiny``, the
    default) and no scale key given, the embedded task's scale applies (:func:`with_embedded_scale`)."""

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
        """``model=PATH_OR_NAME`` is short for ``model.path=PATH_OR_NAME``; then the embedded scale."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": {"path": data["model"]}}
        return with_embedded_scale(data)

    @model_validator(mode="after")
    def _async_corrects(self) -> TrainConfig:
        """Asynchronous rollouts are off-policy by the lag: TIS at 2 unless a correction is chosen."""
        tcfg = self.trainer
        if tcfg.async_level and tcfg.rollout_placement == "inline":
            raise ValueError(
                f"trainer.rollout_placement: inline samples in the training process, so async_level must be 0 "
                f"(got {tcfg.async_level}); use process or auto"
            )
        if tcfg.async_level and self.ppo.tis_cap == 0 and not self.ppo.decoupled:
            self.ppo = self.ppo.model_copy(update={"tis_cap": 2.0})
        return self

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
