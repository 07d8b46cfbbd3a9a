"""``anytime-reasoner demo``: the project's main job, on CPU with no downloads.

1. Bootstrap (or reuse from the cache) the tiny base model on the embedded synthetic task.
2. Train GRPO and AnytimeReasoner (``ar_preset``) from it with the same questions per step, the same
   G thinkings per question, the same steps and learning rate: the runs differ only in the preset
   (budgets, prior, A summaries, advantage knobs).
3. Evaluate base, GRPO and AR on the same held-out questions at every budget of the grid, one
   thinking per sample cut at every budget (SPEC §9), with the same seed.
4. Print the table; write ``results.json``, ``results.md`` and ``anytime_curves.png``.

Each training run resumes from its checkpoints (``resume=auto``) and the evaluation caches finished
problems, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from anytime_reasoner.config import DemoConfig, TrainConfig, build_config, dump

TASK = "synthetic"


def train_config(cfg: DemoConfig, base_model: Path, preset: str) -> TrainConfig:
    """The RL run of ``preset`` at the demo's scale; GRPO keeps the preset's S = 1, A = 1."""
    rollout: dict[str, Any] = {
        "n": cfg.n,
        "max_budget": cfg.max_budget,
        "summary_max_tokens": cfg.summary_max_tokens,
    }
    if preset != "grpo":
        rollout.update(n_summary=cfg.n_summary, n_budget_support=cfg.n_budget_support)
    overrides = {
        "model": {"path": str(base_model)},
        "rollout": rollout,
        "ppo": {"lr": cfg.lr, "ppo_mini_batch_size": cfg.batch_size, "ppo_max_token_len": 16384},
        "trainer": {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "val_every": 0,
            "save_every": max(cfg.steps // 4, 1),
            "out": str(Path(cfg.out) / preset),
            "seed": cfg.seed,
            "progress": cfg.progress,
        },
    }
    return build_config(TrainConfig, preset=preset, overrides=overrides)


def train(cfg: TrainConfig) -> Path:
    from anytime_reasoner.train.build import build_trainer

    trainer = build_trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.verifier.close()
    return Path(cfg.trainer.out) / "final"


def evaluate_models(cfg: DemoConfig, models: dict[str, Path]) -> dict[str, list[float]]:
    """Accuracy per evaluation budget of each model on the held-out questions."""
    from anytime_reasoner.eval.loading import load
    from anytime_reasoner.eval.runner import CACHE_FILE, EvalSettings, ResultCache, evaluate, model_fingerprint
    from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier
    from anytime_reasoner.train.sources import synthetic_held_out

    examples = {TASK: synthetic_held_out(cfg.eval_size)}
    accuracy: dict[str, list[float]] = {}
    with MathVerifier(GraderSettings()) as verifier:
        for name, path in models.items():
            loaded = load(str(path), None, "float32", "auto", "<think>", "</think>")
            settings = EvalSettings(
                model=str(path),
                budgets=tuple(cfg.eval_budgets),
                samples=cfg.eval_samples,
                temperature=cfg.eval_temperature,
                summary_max_tokens=cfg.summary_max_tokens,
                seed=cfg.seed,
                batch_size=32,
                model_fingerprint=model_fingerprint(str(path)),
            )
            cache = ResultCache(Path(cfg.out) / "eval" / name / CACHE_FILE, settings.key())
            result = evaluate(loaded.engine, loaded.codec, verifier, examples, settings, cache=cache, progress=cfg.progress)
            accuracy[name] = list(result.average.accuracy)
    return accuracy


def results_json(cfg: DemoConfig, accuracy: dict[str, list[float]], seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "task": TASK,
        "budgets": list(cfg.eval_budgets),
        "models": {name: {"accuracy": acc, "mean": sum(acc) / len(acc)} for name, acc in accuracy.items()},
        "seed": cfg.seed,
        "settings": dump(cfg),
        "seconds": seconds,
    }


def markdown_table(results: dict[str, Any]) -> str:
    budgets = results["budgets"]
    head = "| model | " + " | ".join(str(b) for b in budgets) + " | mean |"
    rule = "|---|" + "---:|" * (len(budgets) + 1)
    rows = [
        f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in m["accuracy"]) + f" | **{100 * m['mean']:.1f}** |"
        for name, m in results["models"].items()
    ]
    return "\n".join([head, rule, *rows])


def run_demo(cfg: DemoConfig) -> int:
    import logging

    from anytime_reasoner.eval.plot import curves_of, draw
    from anytime_reasoner.tasks.bootstrap import ensure_base_model

    from transformers.utils import logging as hf_logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    hf_logging.disable_progress_bar()  # weight loading/saving bars of each phase drown the demo's own
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if cfg.base_model:
        base = Path(cfg.base_model)
    else:
        base = ensure_base_model(cfg.cache_dir, seed=cfg.seed, progress=cfg.progress)
    seconds["bootstrap"] = time.perf_counter() - t0
    models: dict[str, Path] = {"base": base}
    for preset in ("grpo", cfg.ar_preset):
        t = time.perf_counter()
        models[preset] = train(train_config(cfg, base, preset))
        seconds[f"train_{preset}"] = time.perf_counter() - t
    t = time.perf_counter()
    accuracy = evaluate_models(cfg, models)
    seconds["eval"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    results = results_json(cfg, accuracy, seconds)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    draw(curves_of(str(out / "results.json"), None, False), out / "anytime_curves.png", title="Anytime accuracy (held-out)")
    print(f"\naccuracy (%) on {cfg.eval_size} held-out questions × {cfg.eval_samples} samples, seed {cfg.seed}:")
    print(table)
    print(f"\n{seconds['total']:.0f}s in all; wrote {out / 'results.json'}, results.md, anytime_curves.png")
    return 0
