"""``compare``: the aggregation by hand, the per-preset run configs, and end to end at toy scale
(the demo's numbers equal the comparison's for the same seed, and the demo writes its results,
plot and trained models)."""

import json
import statistics

import pytest

from anytime_reasoner.cli import main
from anytime_reasoner.compare import mean_ratios, model_summary, steps_to_reach, validation_curve
from anytime_reasoner.config import PRESETS, CompareConfig, ConfigError, build_config
from anytime_reasoner.demo import train_config


def test_model_summary_by_hand():
    m = model_summary({0: [0.2, 0.4], 1: [0.4, 0.8]})
    assert m["accuracy"] == pytest.approx([0.3, 0.6])
    # sample std of two values a, b is |a − b| / √2: 0.2/√2, 0.4/√2
    assert m["std"] == pytest.approx([0.2 / 2**0.5, 0.4 / 2**0.5])
    # anytime per seed: (0.2 + 0.4)/2 = 0.3 and (0.4 + 0.8)/2 = 0.6 → mean 0.45, std 0.3/√2
    assert m["mean"] == pytest.approx(0.45) and m["mean_std"] == pytest.approx(0.3 / 2**0.5)
    assert m["per_seed"]["1"] == {"accuracy": [0.4, 0.8], "mean": pytest.approx(0.6)}
    assert model_summary({3: [0.5, 0.5]})["std"] == [0.0, 0.0]  # one seed: no spread


def test_validation_curve_and_steps_to_reach():
    runs = {
        0: [{"step": 1, "loss": 0.0}, {"step": 2, "val/anytime": 0.2}, {"step": 4, "val/anytime": 0.6}],
        1: [{"step": 2, "val/anytime": 0.4}, {"step": 4, "val/anytime": 0.4}],
    }
    curve = validation_curve(runs)
    # steps 2 and 4: means (0.2 + 0.4)/2 = 0.3 and (0.6 + 0.4)/2 = 0.5
    assert curve["steps"] == [2, 4] and curve["anytime"] == pytest.approx([0.3, 0.5])
    assert steps_to_reach(curve, 0.3) == 2 and steps_to_reach(curve, 0.45) == 4
    assert steps_to_reach(curve, 0.51) is None
    assert validation_curve({0: [{"step": 1}]}) is None


def test_mean_ratios_skip_budgets_without_a_value():
    runs = {0: [{"ratio_R_minus_V": [0.5, None]}, {"ratio_R_minus_V": [0.3, 0.2]}], 1: [{"ratio_R_minus_V": [0.1, None]}]}
    # budget 0: (0.5 + 0.3 + 0.1)/3 = 0.3; budget 1: only 0.2 counts
    assert mean_ratios(runs) == {"ratio_R_minus_V": [pytest.approx(0.3), pytest.approx(0.2)]}


def test_run_configs_keep_each_preset_and_share_the_loss_constant(tmp_path):
    cfg = build_config(CompareConfig, overrides=["steps=12", "val_every=3"])
    configs = {p: train_config(cfg, tmp_path / "base", p, 1, tmp_path / p, 524) for p in PRESETS}
    for preset, c in configs.items():
        want = PRESETS[preset]["rollout"]
        assert (c.rollout.n_summary > 1) == (want["n_summary"] > 1)
        assert (len(c.rollout.plan()) > 1) == (want["n_budget_support"] > 1)
        assert (c.rollout.variance_reduction, c.rollout.summary_method) == (want["variance_reduction"], want["summary_method"])
        assert c.ppo.max_response_len == 524  # one constant for every preset, as the original's 10176
        assert (c.rollout.n, c.trainer.steps, c.trainer.batch_size, c.ppo.lr, c.trainer.seed) == (8, 12, 16, 1e-4, 1)
        assert c.trainer.val_budgets == list(range(24, 109, 12)) and c.trainer.val_every == 3
    assert configs["grpo+vr"].rollout.plan().budgets == (27, 54, 81, 108)
    assert configs["grpo+vr"].rollout.n_summary == 1


def test_shared_loss_constant_from_the_embedded_tokenizer(tmp_path):
    from anytime_reasoner.demo import shared_response_len
    from anytime_reasoner.tasks.tokenizer import TokenizerSpec, build_tokenizer

    build_tokenizer(TokenizerSpec()).save_pretrained(tmp_path)
    # the 4 × 4 tree: 108 + 4·4·(14 inserted + 12 summary) = 524, the value tiny-synthetic.yaml sets
    assert shared_response_len(build_config(CompareConfig), tmp_path) == 524
    assert shared_response_len(build_config(CompareConfig, overrides=["max_response_len=999"]), tmp_path) == 999


def test_presets_with_equal_knobs_are_run_once(tmp_path):
    from anytime_reasoner.demo import Layout, plan_jobs, twins

    # the seed's table gives ar-base and grpo+vr+decouple the same five knobs
    assert twins(list(PRESETS)) == {"grpo+vr+decouple": "ar-base"}
    cfg = build_config(CompareConfig, overrides=["presets=ar-base,grpo+vr+decouple,grpo", "seeds=0", "max_response_len=50"])
    layout = Layout(tmp_path, twins(cfg.presets))
    jobs, results = plan_jobs(cfg, tmp_path / "base", cfg.presets, {0: layout}, tmp_path / "held.jsonl")
    # trainings: ar-base and grpo only; evaluations: base, ar-base, grpo
    assert sorted(j.name for j in jobs) == ["eval ar-base", "eval base", "eval grpo", "train ar-base", "train grpo"]
    assert results[0]["grpo+vr+decouple"] == results[0]["ar-base"] == tmp_path / "eval" / "ar-base" / "results.json"
    assert layout.run("grpo+vr+decouple") == tmp_path / "ar-base"


def test_compare_config_errors():
    with pytest.raises(ConfigError, match="presets: unknown 'gpro'; allowed: grpo"):
        build_config(CompareConfig, overrides=["presets=grpo,gpro"])
    with pytest.raises(ConfigError, match="each preset and each seed may appear once"):
        build_config(CompareConfig, overrides=["seeds=1,1"])


TOY = [
    "steps=2", "batch_size=2", "n=2", "n_summary=2", "max_budget=16", "summary_max_tokens=4",
    "eval_size=3", "eval_samples=2", "eval_budgets=2:16:2", "progress=false",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.processes  # two jobs at a time
def test_compare_end_to_end_equals_the_demo(tiny_model_dir, tmp_path, capsys):
    base = tiny_model_dir
    out = tmp_path / "cmp"
    args = ["compare", f"base_model={base}", f"out={out}", "presets=ar-uniform,grpo", "seeds=0,1", "val_every=1", "val_size=2"]
    assert main([*args, *TOY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["base", "ar-uniform", "grpo"] and results["seeds"] == [0, 1]
    for m in results["models"].values():
        per_seed = [m["per_seed"][s]["accuracy"] for s in ("0", "1")]
        assert m["accuracy"] == pytest.approx([(a + b) / 2 for a, b in zip(*per_seed, strict=False)])
        assert m["std"] == pytest.approx([statistics.stdev(pair) for pair in zip(*per_seed, strict=False)])
    assert results["validation"]["grpo"]["steps"] == [1, 2]
    assert set(results["efficiency"]["steps_to_reach"]) == {"ar-uniform"}
    assert (out / "validation_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ar-uniform |" in (out / "results.md").read_text()
    for seed in (0, 1):
        assert len((out / f"seed{seed}" / "grpo" / "metrics.jsonl").read_text().splitlines()) == 2

    capsys.readouterr()

    # the demo is the one-seed case: its runs are the same commands, so its numbers are equal
    demo = tmp_path / "demo"
    assert main(["demo", f"base_model={base}", f"out={demo}", "seed=1", *TOY]) == 0
    shown = json.loads((demo / "results.json").read_text())
    assert shown["budgets"] == [2, 4, 6, 8, 10, 12, 14, 16] and shown["seed"] == 1
    assert list(shown["models"]) == ["base", "grpo", "ar-uniform"]
    for name, m in shown["models"].items():
        assert m["accuracy"] == results["models"][name]["per_seed"]["1"]["accuracy"]
        assert m["mean"] == pytest.approx(sum(m["accuracy"]) / 8)
    assert (demo / "anytime_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for preset in ("grpo", "ar-uniform"):  # each method was a real training run that saved a loadable model
        assert (demo / preset / "final" / "config.json").is_file()
        assert len((demo / preset / "metrics.jsonl").read_text().splitlines()) == 2
    assert "| ar-uniform |" in capsys.readouterr().out


def test_compare_help_is_listed(capsys):
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "presets" in text and "seeds" in text and "max_response_len" in text


def test_prompt_budget_presets_get_a_second_evaluation(tmp_path):
    from anytime_reasoner.demo import PROMPT_SUFFIX, Layout, plan_jobs

    cfg = build_config(CompareConfig, overrides=["presets=grpo,l1-max", "seeds=0", "max_response_len=50"])
    jobs, results = plan_jobs(cfg, tmp_path / "base", cfg.presets, {0: Layout(tmp_path)}, tmp_path / "held.jsonl")
    by_name = {j.name: j for j in jobs}
    assert sorted(by_name) == [
        "eval base",
        "eval grpo",
        "eval l1-max",
        f"eval l1-max{PROMPT_SUFFIX}",
        "train grpo",
        "train l1-max",
    ]
    prompted = by_name[f"eval l1-max{PROMPT_SUFFIX}"]
    assert "mode=prompt-budget" in prompted.args and "budget_prompt=Think for maximum {n} tokens." in prompted.args
    assert prompted.after == ("train l1-max",) and "mode=prompt-budget" not in by_name["eval l1-max"].args
    assert results[0][f"l1-max{PROMPT_SUFFIX}"] == tmp_path / "eval" / f"l1-max{PROMPT_SUFFIX}" / "results.json"


def test_model_summary_averages_the_tokens_spent():
    m = model_summary({0: [0.2, 0.4], 1: [0.4, 0.8]}, {0: [10.0, 20.0], 1: [14.0, 30.0]})
    assert m["tokens_used"] == pytest.approx([12.0, 25.0])
    assert "tokens_used" not in model_summary({0: [0.2]}, {0: None})  # an older results file: no tokens


@pytest.mark.slow
@pytest.mark.processes
def test_every_budget_aware_preset_runs_end_to_end(tiny_model_dir, tmp_path, capsys):
    """Each of the ten presets trains two steps from the tiny model and is evaluated (L1 twice)."""
    out = tmp_path / "baselines"
    args = ["compare", f"base_model={tiny_model_dir}", f"out={out}", "presets=baselines", "seeds=0", "val_every=0"]
    assert main([*args, *TOY]) == 0
    results = json.loads((out / "results.json").read_text())
    names = ["base", "grpo", "ar-uniform", "ar-linear", "l1-exact", "l1-max", "e1", "thinkprune", "shorterbetter",
             "grpo+overlong", "dapo", "l1-exact@prompt", "l1-max@prompt"]  # fmt: skip
    assert list(results["models"]) == names
    for name, m in results["models"].items():
        assert len(m["accuracy"]) == 8 and len(m["tokens_used"]) == 8
        assert all(t <= b for t, b in zip(m["tokens_used"], results["budgets"], strict=True)), name  # never past the budget
    metrics = {
        p: [json.loads(line) for line in (out / "seed0" / p / "metrics.jsonl").read_text().splitlines()] for p in names[1:11]
    }
    assert [m["cap"] for m in metrics["e1"]] == [8, 8]  # E1 thinks to half the budget
    assert all("target_length" in m for m in metrics["l1-exact"]) and "target_length" not in metrics["grpo"][0]
    assert all("kept_questions" in m for m in metrics["dapo"]) and "kept_questions" not in metrics["grpo"][0]
    prompted = json.loads((out / "seed0" / "eval" / "l1-exact@prompt" / "results.json").read_text())
    assert prompted["mode"] == "prompt-budget" and prompted["settings"]["budget_prompt"] == "Think for {n} tokens."
    assert (out / "tokens_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "Thinking tokens spent per budget" in (out / "results.md").read_text()
    capsys.readouterr()
