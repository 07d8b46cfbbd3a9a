"""``anytime-reasoner compare``: presets × seeds on the embedded task, one table, one plot.

Every run starts from the same base model and sees the same questions per step (the question
stream depends on the seed and the step only), with the same G, steps and learning rate; the
presets differ only in their rollout and advantage knobs (docs/ALGORITHM.md §8). Each trained model, and the
base model once per seed, is evaluated on the same held-out questions and budget grid with the
seed's evaluation stream. The demo is the case ``presets=ar-uniform,grpo seeds=<seed>``: its runs
are the same commands, so its numbers equal this command's for that seed.

Writes to ``out/``:

- ``results.json``: per model the accuracy per budget (mean over seeds), its sample std over
  seeds, the anytime score (mean over the grid) with its std, and every seed's numbers; the
  validation curves (``val/anytime`` per step, when ``val_every`` > 0); the learning-efficiency
  answer (the first validation step at which each preset's mean curve reaches the reference
  preset's final value); and the BRPO variance ratios per budget, averaged over steps and seeds;
- ``results.md``: the accuracy table (mean ± std per budget and the anytime score) and the
  thinking tokens spent per budget;
- ``anytime_curves.png`` (accuracy vs budget), ``tokens_curves.png`` (accuracy vs the thinking
  tokens actually spent at each budget) and ``validation_curves.png`` (anytime vs step).

A preset that states its budget in the prompt (L1) is evaluated twice: in the anytime mode like
every model, and in the prompt-budget mode, reported as ``<preset>@prompt``.

Runs live in ``out/seed<N>/<preset>/`` and evaluations in ``out/seed<N>/eval/<model>/``; like the
demo, an interrupted comparison resumes (training from checkpoints, evaluation from its cache).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anytime_reasoner.config import PRESETS, CompareConfig, dump
from anytime_reasoner.demo import (
    HELD_OUT_FILE,
    PROMPT_SUFFIX,
    TASK,
    Layout,
    base_model,
    plan_jobs,
    progress_bar,
    prompt_budget_of,
    read_accuracy,
    read_tokens,
    table_head,
    twins,
    write_held_out,
)
from anytime_reasoner.eval.plot import curves_of, draw, draw_steps
from anytime_reasoner.jobs import run_jobs

RATIOS = ("ratio_R_minus_V", "ratio_R_minus_V1", "ratio_R_minus_V2")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n − 1); 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def model_summary(per_seed: Mapping[int, list[float]], tokens: Mapping[int, list[float] | None] | None = None) -> dict[str, Any]:
    """Mean and std over seeds, per budget and of the anytime score, from ``{seed: accuracy}``;
    with ``tokens`` (``{seed: thinking tokens spent per budget}``) also their mean over seeds."""
    accs = list(per_seed.values())  # [n_seeds][n_budgets]
    anytime = [_mean(a) for a in accs]
    used = [t for t in (tokens or {}).values() if t is not None]
    extra = {"tokens_used": [_mean(col) for col in zip(*used, strict=True)]} if tokens and len(used) == len(tokens) else {}
    return {
        **extra,
        "accuracy": [_mean(col) for col in zip(*accs, strict=False)],
        "std": [_std(col) for col in zip(*accs, strict=False)],
        "mean": _mean(anytime),
        "mean_std": _std(anytime),
        "per_seed": {str(seed): {"accuracy": a, "mean": _mean(a)} for seed, a in per_seed.items()},
    }


def read_run_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def validation_curve(runs: Mapping[int, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """``val/anytime`` per validation step: per seed and the mean over seeds (steps all share)."""
    per_seed = {seed: {m["step"]: m["val/anytime"] for m in lines if "val/anytime" in m} for seed, lines in runs.items()}
    steps = sorted(set.intersection(*(set(c) for c in per_seed.values()))) if per_seed else []
    if not steps:
        return None
    return {
        "steps": steps,
        "anytime": [_mean([c[s] for c in per_seed.values()]) for s in steps],
        "per_seed": {str(seed): [c[s] for s in steps] for seed, c in per_seed.items()},
    }


def steps_to_reach(curve: Mapping[str, Any], target: float) -> int | None:
    """The first validation step whose mean anytime score is ≥ ``target`` (None: never)."""
    return next((s for s, v in zip(curve["steps"], curve["anytime"], strict=False) if v >= target), None)


def mean_ratios(runs: Mapping[int, list[dict[str, Any]]]) -> dict[str, list[float | None]]:
    """Each BRPO variance ratio per budget, averaged over every step of every seed (None entries,
    budgets without two live thinkings, are left out)."""
    out: dict[str, list[float | None]] = {}
    lines = [m for seed_lines in runs.values() for m in seed_lines]
    for key in RATIOS:
        rows = [m[key] for m in lines if isinstance(m.get(key), list)]
        if not rows:
            continue
        columns = zip(*rows, strict=False)
        out[key] = [(_mean(vals) if (vals := [v for v in col if v is not None]) else None) for col in columns]
    return out


def summarize(
    cfg: CompareConfig,
    results: Mapping[int, Mapping[str, Path]],
    runs: Mapping[str, Mapping[int, list[dict[str, Any]]]],
    seconds: Mapping[str, float],
) -> dict[str, Any]:
    """The ``results.json`` object (see the module docstring)."""
    names = ["base", *cfg.presets, *(p + PROMPT_SUFFIX for p in cfg.presets if prompt_budget_of(p) is not None)]
    models = {
        name: model_summary(
            {seed: read_accuracy(results[seed][name]) for seed in cfg.seeds},
            {seed: read_tokens(results[seed][name]) for seed in cfg.seeds},
        )
        for name in names
    }
    validation = {p: c for p in cfg.presets if (c := validation_curve(runs[p])) is not None}
    efficiency: dict[str, Any] = {}
    if cfg.reference in validation:
        target = validation[cfg.reference]["anytime"][-1]
        efficiency = {
            "reference": cfg.reference,
            "reference_final": target,
            "steps_to_reach": {p: steps_to_reach(c, target) for p, c in validation.items() if p != cfg.reference},
        }
    diagnostics = {p: r for p in cfg.presets if PRESETS[p]["rollout"]["n_budget_support"] > 1 and (r := mean_ratios(runs[p]))}
    return {
        "task": TASK,
        "budgets": list(cfg.eval_budgets),
        "seeds": list(cfg.seeds),
        "models": models,
        "validation": validation,
        "efficiency": efficiency,
        "diagnostics": diagnostics,
        "settings": dump(cfg),
        "seconds": dict(seconds),
    }


def tokens_table(summary: Mapping[str, Any]) -> str:
    """Mean thinking tokens spent per budget (over seeds, problems and samples), and their mean."""
    rows = [
        f"| {name} | " + " | ".join(f"{t:.1f}" for t in m["tokens_used"]) + f" | **{_mean(m['tokens_used']):.1f}** |"
        for name, m in summary["models"].items()
        if "tokens_used" in m
    ]
    return "\n".join([*table_head(summary["budgets"], "mean"), *rows])


def markdown_table(summary: Mapping[str, Any]) -> str:
    """Accuracy (%) per budget and the anytime score, mean ± sample std over seeds."""
    rows = []
    for name, m in summary["models"].items():
        cells = [f"{100 * a:.1f} ± {100 * s:.1f}" for a, s in zip(m["accuracy"], m["std"], strict=False)]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | **{100 * m['mean']:.1f} ± {100 * m['mean_std']:.1f}** |")
    return "\n".join([*table_head(summary["budgets"], "anytime"), *rows])


def write_report(summary: Mapping[str, Any], out: Path) -> tuple[str, str]:
    """``results.md`` and the plots of a ``results.json`` summary in ``out``; returns the two tables."""
    table, spent = markdown_table(summary), tokens_table(summary)
    (out / "results.md").write_text(table + "\n\nThinking tokens spent per budget:\n\n" + spent + "\n", encoding="utf-8")
    seeds = ", ".join(map(str, summary["seeds"]))
    draw(curves_of(str(out / "results.json"), None, False), out / "anytime_curves.png",
         title=f"Anytime accuracy (held-out, mean over seeds {seeds})")  # fmt: skip
    used = {n: (m["tokens_used"], [100 * a for a in m["accuracy"]]) for n, m in summary["models"].items() if "tokens_used" in m}
    if used:
        draw_steps(used, out / "tokens_curves.png", xlabel="Thinking tokens spent", ylabel="Accuracy (%)",
                   title="Accuracy vs thinking tokens spent (a point per budget)")  # fmt: skip
    if summary["validation"]:
        lines = {p: (c["steps"], [100 * v for v in c["anytime"]]) for p, c in summary["validation"].items()}
        draw_steps(lines, out / "validation_curves.png", ylabel="Validation anytime accuracy (%)",
                   title=f"Learning curves (mean over seeds {seeds})")  # fmt: skip
    return table, spent


def run_compare(cfg: CompareConfig) -> int:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = base_model(cfg)
    seconds: dict[str, float] = {"bootstrap": round(time.perf_counter() - t0, 1)}
    aliases = twins(cfg.presets)
    layouts = {seed: Layout(out / f"seed{seed}", aliases) for seed in cfg.seeds}
    held_out = write_held_out(cfg, out / HELD_OUT_FILE)
    jobs, results = plan_jobs(cfg, base, cfg.presets, layouts, held_out)
    runs = [layout.run(p) for layout in layouts.values() for p in cfg.presets if p not in aliases]
    same = "".join(f"; {p} = {q} (same knobs, run once)" for p, q in aliases.items())
    print(f"compare: {len(cfg.presets)} presets × {len(cfg.seeds)} seeds from {base}{same}; {len(jobs)} jobs, "
          f"{cfg.jobs} at a time; logs in {out}/", flush=True)  # fmt: skip
    bar, update = progress_bar(len(runs) * cfg.steps, runs, len(jobs) - len(runs), cfg.progress, "compare: RL steps + evals")
    with bar:
        seconds.update(run_jobs(jobs, cfg.jobs, update))
    seconds["total"] = round(time.perf_counter() - t0, 1)
    metrics = {p: {seed: read_run_metrics(layouts[seed].run(p)) for seed in cfg.seeds} for p in cfg.presets}
    summary = summarize(cfg, results, metrics, seconds)
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    table, spent = write_report(summary, out)
    print(f"\naccuracy (%) by thinking budget, mean ± std over seeds {cfg.seeds}:")
    print(table)
    print("\nthinking tokens spent per budget:")
    print(spent)
    if summary["efficiency"]:
        eff = summary["efficiency"]
        print(f"\nsteps to reach {eff['reference']}'s final validation score ({100 * eff['reference_final']:.1f}): "
              + ", ".join(f"{p} {s if s is not None else 'never'}" for p, s in eff["steps_to_reach"].items()))  # fmt: skip
    print(f"\n{seconds['total']:.0f}s in all; wrote {out / 'results.json'}, results.md, anytime_curves.png")
    return 0
