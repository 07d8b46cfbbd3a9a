"""Configuration: presets, shipped config files, overrides and one-line errors."""

import dataclasses
from pathlib import Path

import pytest

import anytime_reasoner
from anytime_reasoner.config import BASELINE_PIECES, PRESETS, ConfigError, TrainConfig, build_config, parse_overrides
from anytime_reasoner.config.engine import EngineConfig
from anytime_reasoner.engine.vllm import VLLMSettings

CONFIG_DIR = Path(anytime_reasoner.__file__).parent / "configs"

SEED_TABLE = {  # docs/ALGORITHM.md §8: n_summary, summary_method, n_budget_support, budget_probs, variance_reduction
    "grpo": (1, "grpo", 1, "base", "v2only"),
    "ar-linear": (4, "brpo", 4, "linear", "brpo"),
    "ar-uniform": (4, "brpo", 4, "uniform", "brpo"),
    "ar-base": (4, "brpo", 4, "base", "brpo"),
    "grpo+linear": (1, "grpo", 4, "linear", "v2only"),
    "grpo+decouple": (4, "brpo", 4, "base", "v2only"),
    "grpo+vr": (1, "grpo", 4, "base", "brpo"),
    "grpo+vr+decouple": (4, "brpo", 4, "base", "brpo"),
}


@pytest.mark.parametrize("name", sorted(SEED_TABLE))
def test_every_preset_loads_with_the_seed_values(name):
    cfg = build_config(TrainConfig, preset=name)
    r = cfg.rollout
    assert (r.n_summary, r.summary_method, r.n_budget_support, r.budget_probs, r.variance_reduction) == SEED_TABLE[name]


def test_preset_budget_plans():
    # max_budget 8000, 4 supports → {2000, 4000, 6000, 8000}; linear prior ∝ b_j → 0.1, 0.2, 0.3, 0.4
    # (the paper's scale: any model but the embedded one, which gets its own scale, below)
    plan = build_config(TrainConfig, preset="ar-linear", overrides=["model=some/model"]).rollout.plan()
    assert plan.budgets == (2000, 4000, 6000, 8000)
    assert plan.probs == pytest.approx((0.1, 0.2, 0.3, 0.4))
    grpo = build_config(TrainConfig, preset="grpo", overrides=["model=some/model"]).rollout.plan()
    assert grpo.budgets == (8000,) and grpo.probs == (1.0,)
    assert set(PRESETS) == set(SEED_TABLE) | set(BASELINE_PIECES)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_file_loads(path):
    cfg = build_config(TrainConfig, files=[path])
    cfg.rollout.plan()


def test_recipe_matches_the_original():
    """The paper's recipe (docs/ALGORITHM.md §8): the original's loss constant, weight decay and validation."""
    cfg = build_config(TrainConfig, preset="ar-uniform", files=[CONFIG_DIR / "r1-distill-1.5b-deepscaler.yaml"])
    assert cfg.ppo.max_response_len == 10176 and cfg.ppo.loss_agg == "constant"
    assert (cfg.ppo.lr, cfg.ppo.weight_decay, cfg.ppo.clip_eps, cfg.ppo.grad_clip) == (1e-6, 0.01, 0.2, 1.0)
    assert (cfg.trainer.batch_size, cfg.ppo.ppo_mini_batch_size, cfg.rollout.n) == (64, 32, 8)
    assert (cfg.trainer.val_n, cfg.trainer.val_n_summary, cfg.trainer.val_temperature) == (8, 4, 0.6)
    assert cfg.rollout.plan().budgets == (2000, 4000, 6000, 8000) and cfg.rollout.summary_max_tokens == 118
    # bf16 compute over float32 master weights, layers recomputed in backward, as the original's FSDP setup
    assert (cfg.model.dtype, cfg.model.activation_checkpointing, cfg.model.lora_rank) == ("bfloat16", True, 0)


def test_recipe_keeps_few_checkpoints_and_rolls_out_with_vllm():
    # a checkpoint of the 1.5B run is ~21.5 GB (fp32 weights, AdamW state, bf16 export): all 31 of a 630-step
    # run at save_every=20 (630 // 20 = 31) would take 31 x 21.5 = ~670 GB
    cfg = build_config(TrainConfig, preset="ar-uniform", files=[CONFIG_DIR / "r1-distill-1.5b-deepscaler.yaml"])
    assert cfg.trainer.keep_checkpoints == 3 and cfg.trainer.steps // cfg.trainer.save_every == 31
    assert cfg.engine.backend == "vllm"  # not transformers' generate on a FlexAttention-loaded model
    assert cfg.engine.seed_requests is False  # vLLM's fused sampler for ~1,000 summary sequences per rank


def test_tiny_config_shares_one_loss_constant():
    # 108 + 4·4·(14 + 12) = 524 for every preset (the compare/demo runs use the same value)
    for preset in PRESETS:
        assert build_config(TrainConfig, preset=preset, files=[CONFIG_DIR / "tiny-synthetic.yaml"]).ppo.max_response_len == 524


def test_shipped_config_files_exist():
    assert list(CONFIG_DIR.glob("*.yaml")), "the package ships example configs"


def test_order_defaults_preset_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("rollout:\n  n_summary: 2\n  max_budget: 400\ntrainer:\n  steps: 5\n")
    cfg = build_config(TrainConfig, preset="ar-uniform", files=[f], overrides=["trainer.steps=7"])
    assert cfg.rollout.n_summary == 2  # file beats preset
    assert cfg.trainer.steps == 7  # override beats file
    assert cfg.rollout.plan().budgets == (100, 200, 300, 400)


def test_seed_spelling_of_knobs_is_accepted():
    cfg = build_config(
        TrainConfig,
        overrides=["actor_rollout_ref.rollout.n_summary=2", "actor_rollout_ref.rollout.budget_probs=linear"],
    )
    assert cfg.rollout.n_summary == 2 and cfg.rollout.budget_probs == "linear"


def test_explicit_budgets_and_weights():
    cfg = build_config(TrainConfig, overrides=["rollout.budgets=100,300,600", "rollout.budget_probs=1,1,2"])
    plan = cfg.rollout.plan()
    assert plan.budgets == (100, 300, 600)
    assert plan.probs == pytest.approx((0.25, 0.25, 0.5))
    grid = build_config(TrainConfig, overrides=["rollout.budgets=250:1000:250"]).rollout.plan()
    assert grid.budgets == (250, 500, 750, 1000)


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.n=0", "rollout.n: Input should be greater than or equal to 1"),
        ("rollout.bogus=1", "rollout.bogus: unknown key in 'rollout'; allowed: n, n_summary"),
        ("bogus=1", "bogus: unknown key; allowed: model, engine, data, rollout, length, ppo, trainer"),
        ("rollout.n_summary=x", "rollout.n_summary: Input should be a valid integer"),
        ("rollout.summary_method=ppo", "rollout.summary_method: Input should be 'grpo' or 'brpo'"),
        ("rollout.budget_probs=cubic", "rollout.budget_probs: allowed: base, uniform, linear"),
        ("rollout.budget_probs=1,2", "rollout.budget_probs: 2 weights given for 4 budgets"),
        ("rollout.budget_probs=0,0,0,0", "rollout.budget_probs: weights sum to zero"),
        ("rollout.budgets=300,200", "rollout.budgets: budgets must be strictly increasing"),
        ("rollout.top_p=1.5", "rollout.top_p: Input should be less than or equal to 1"),
        ("ppo.loss_agg=seq", "ppo.loss_agg: Input should be 'constant' or 'token-mean'"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        build_config(TrainConfig, overrides=[override])
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_unknown_preset_and_bad_override_syntax():
    with pytest.raises(ConfigError, match="preset: unknown 'ppo'; allowed: grpo, ar-linear"):
        build_config(TrainConfig, preset="ppo")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["rollout.n"])


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(TrainConfig, files=[f])
    with pytest.raises(ConfigError, match="file not found"):
        build_config(TrainConfig, files=[tmp_path / "missing.yaml"])


def test_model_shorthand():
    # model=X is short for model.path=X; other model keys keep their defaults
    cfg = build_config(TrainConfig, overrides=["model=some/model"])
    assert cfg.model.path == "some/model" and cfg.model.dtype == "float32"


def test_yaml_budget_grids_are_not_base_60_numbers(tmp_path):
    # plain YAML 1.1 reads 1:30 as the integer 90 (base 60); a grid must stay a grid
    f = tmp_path / "c.yaml"
    f.write_text("rollout:\n  budgets: 1:30:1\nppo:\n  lr: 1e-6\n")
    cfg = build_config(TrainConfig, files=[f])
    assert cfg.rollout.budgets == list(range(1, 31))
    assert cfg.ppo.lr == 1e-6


@pytest.mark.parametrize("name", sorted(BASELINE_PIECES))
def test_every_budget_aware_preset_is_grpo_plus_its_pieces(name):
    cfg = build_config(TrainConfig, preset=name, overrides=["rollout.max_budget=108"])
    grpo = build_config(TrainConfig, preset="grpo", overrides=["rollout.max_budget=108"])
    how_trained = {"advantage_norm", "dynamic_sampling", "max_sampling_rounds"}  # per paper: test below
    assert cfg.rollout.model_dump(exclude=how_trained) == grpo.rollout.model_dump(exclude=how_trained)  # one budget, one summary
    assert cfg.length != grpo.length and cfg.length.model_dump(exclude_defaults=True)


# How each paper trains (docs/BASELINES.md): advantage normalization, loss aggregation, what a
# thinking truncated at the cap gets (summary: its forced answer is graded; none: no answer,
# scored wrong, the forced answer not trained), the wrong-answer reward, DAPO's extras.
PAPER_TRAINING = {
    #  preset:        (advantage_norm, loss_agg,     truncated, incorrect, clip_high, dynamic, overlong filter)
    "grpo":           ("none",         "constant",   "summary", 0.0,       None,      False,   False),
    "ar-uniform":     ("none",         "constant",   "summary", 0.0,       None,      False,   False),
    "l1-exact":       ("std",          "token-mean", "none",    0.0,       None,      False,   False),
    "l1-max":         ("std",          "token-mean", "none",    0.0,       None,      False,   False),
    "thinkprune":     ("std",          "token-mean", "none",    0.0,       None,      False,   False),
    "shorterbetter":  ("std",          "token-mean", "none",    0.0,       None,      False,   False),
    "e1":             ("std",          "token-mean", "summary", 0.0,       None,      False,   False),
    "grpo+overlong":  ("none",         "constant",   "summary", 0.0,       None,      False,   False),
    "dapo":           ("std",          "token-mean", "none",    -1.0,      0.28,      True,    True),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PAPER_TRAINING))
def test_each_preset_trains_as_its_paper(name):
    cfg = build_config(TrainConfig, preset=name, overrides=["rollout.max_budget=108"])
    truncated = "none" if cfg.length.hard_limit else "summary"
    got = (cfg.rollout.advantage_norm, cfg.ppo.loss_agg, truncated, cfg.length.incorrect_reward, cfg.ppo.clip_eps_high,
           cfg.rollout.dynamic_sampling, cfg.length.overlong_filter)  # fmt: skip
    assert got == PAPER_TRAINING[name]


def test_budget_aware_presets_spell_their_papers():
    def length(name):
        return build_config(TrainConfig, preset=name, overrides=["rollout.max_budget=108"])

    l1 = length("l1-exact").length
    assert (l1.reward, l1.prompt_budget, l1.budget_prompt) == ("l1-exact", True, "Think for {n} tokens.")
    assert length("l1-max").length.budget_prompt == "Think for maximum {n} tokens."
    # ThinkPrune's 4k → 3k → 2k as thirds of a 36-step run: 108 → 81 → 54 tokens
    prune = length("thinkprune")
    assert prune.length.hard_limit and [prune.plan_at(s).budgets for s in (1, 12, 13, 24, 25, 36)] == [
        (108,), (108,), (81,), (81,), (54,), (54,)
    ]  # fmt: skip
    e1 = length("e1")  # E1: GRPO on rollouts whose thinking is cut at t* = half the budget
    assert not e1.length.hard_limit and e1.plan_at(1).budgets == (54,) and e1.plan_at(36).budgets == (54,)
    assert length("shorterbetter").length.reward == "shorter-better"
    assert length("grpo+overlong").length.overlong_cache == 0.2
    assert length("dapo").length.overlong_cache == 0.2 and length("dapo").ppo.clip_eps == 0.2


def test_cap_schedule_scales_every_budget_of_an_anytime_plan():
    cfg = build_config(TrainConfig, preset="ar-uniform", overrides=["rollout.max_budget=100", "length.cap_schedule=1:1,3:0.5"])
    assert cfg.plan_at(2).budgets == (25, 50, 75, 100)
    assert cfg.plan_at(3).budgets == (12, 25, 38, 50)  # round(12.5) = 12, round(37.5) = 38 (to even)
    assert cfg.plan_at(3).probs == cfg.plan_at(1).probs


def test_compare_takes_named_preset_lists():
    from anytime_reasoner.config import PRESET_SETS, CompareConfig

    cfg = build_config(CompareConfig, overrides=["presets=baselines"])
    assert cfg.presets == ["grpo", "ar-uniform", "ar-linear", "l1-exact", "l1-max", "e1", "thinkprune", "shorterbetter",
                           "grpo+overlong", "dapo"]  # fmt: skip
    assert build_config(CompareConfig).presets == PRESET_SETS["ablation"]


def test_the_embedded_model_runs_at_the_embedded_scale_unless_a_scale_key_is_given():
    # configs/tiny-synthetic.yaml's scale: 4 budgets up to 108 → 27, 54, 81, 108; 12-token summaries; lr 1e-4
    cfg = build_config(TrainConfig, preset="ar-uniform", overrides=["trainer.steps=2"])
    assert cfg.rollout.plan().budgets == (27, 54, 81, 108) and cfg.rollout.summary_max_tokens == 12
    assert (cfg.ppo.lr, cfg.ppo.max_response_len, cfg.trainer.batch_size) == (1e-4, 524, 16)
    assert cfg.trainer.steps == 2 and cfg.trainer.out == "runs/anytime"  # given keys win; the output folder is train's
    assert cfg.rollout.n_summary == 4 and cfg.rollout.budget_probs == "uniform"  # the preset's knobs untouched
    # a key that sizes the sequences means the user chose the scale: nothing is filled in
    chosen = build_config(TrainConfig, preset="ar-uniform", overrides=["rollout.max_budget=200"])
    assert (chosen.rollout.max_budget, chosen.rollout.summary_max_tokens, chosen.ppo.lr) == (200, 118, 1e-6)
    # any other model keeps the paper's scale
    assert build_config(TrainConfig, preset="ar-uniform", overrides=["model=some/model"]).rollout.max_budget == 8000


def test_vllm_knobs_are_exactly_the_vllm_settings():
    """``engine.*`` keys reach ``VLLMSettings`` by name: every key but the backend and the transformers
    engine's own (``held_cache_gib``) is one of its fields, so both vLLM paths (rollouts, serving) take them."""
    knobs = EngineConfig(held_cache_gib=0.5).vllm_knobs()
    assert "held_cache_gib" not in knobs and "backend" not in knobs
    assert set(knobs) <= {f.name for f in dataclasses.fields(VLLMSettings)}
    VLLMSettings(**knobs)  # constructs
