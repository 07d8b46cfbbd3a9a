"""Write an evaluation: ``results.json``, ``results.csv`` and ``results.md`` (also printed).

``results.json``::

    {"model": …, "budgets": [b1, …], "mode": "anytime" | "prompt-budget",
     "benchmarks": {"aime": {"accuracy": [a1, …], "std": […], "anytime": x, "final": y,
                             "n_problems": n, "n_samples": k, "anytime_std": …, "final_std": …,
                             "thinking_tokens": {"mean", "median", "max", "closed_fraction"},
                             "tokens_used": [t1, …]}, …},
     "average": {"accuracy": […], "std": […], "anytime": x, "final": y, "tokens_used": […], …},
     "settings": {…}}

``tokens_used[s]`` is the mean number of thinking tokens a sample spent at budget s (the cut's
length: min(its length, b) in the anytime mode; the generation's own in the prompt-budget mode).
Accuracies are fractions in [0, 1]; the Markdown table shows percentages. The CSV is long-format,
one row per (benchmark, budget) plus the average, so any plotting tool reads it directly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from anytime_reasoner.eval.metrics import Scores, average_tokens
from anytime_reasoner.eval.runner import EvalResults, settings_json

AVERAGE = "average"


def results_json(results: EvalResults) -> dict[str, Any]:
    return {
        "model": results.settings.model,
        "budgets": list(results.settings.budgets),
        "mode": results.settings.mode,
        "benchmarks": {name: b.to_json() for name, b in results.benchmarks.items()},
        "average": {**results.average.to_json(), "tokens_used": _listed(average_tokens(results.benchmarks))},
        "settings": settings_json(results),
    }


def _listed(values: tuple[float, ...] | None) -> list[float] | None:
    return list(values) if values is not None else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _pm(mean: float, std: float, k: int) -> str:
    return f"{_pct(mean)} ± {_pct(std)}" if k > 1 else _pct(mean)


def markdown(results: EvalResults) -> str:
    """Summary table (one row per benchmark + average) and the accuracy-per-budget table."""
    k = results.settings.samples
    names = list(results.benchmarks)
    lines = [
        f"Model: {results.settings.model} — {k} sample(s) per problem, prior {results.prior}, mode {results.settings.mode}",
        "",
        "| benchmark | problems | anytime (%) | final (%) | mean thinking tokens | closed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, b in results.benchmarks.items():
        s, t = b.scores, b.thinking
        lines.append(
            f"| {name} | {b.n_problems} | {_pm(s.anytime, s.anytime_std, k)} | {_pm(s.final, s.final_std, k)} "
            f"| {t.mean:.0f} | {100 * t.closed_fraction:.0f}% |"
        )
    avg = results.average
    lines.append(f"| **{AVERAGE}** | | {_pm(avg.anytime, avg.anytime_std, k)} | {_pm(avg.final, avg.final_std, k)} | | |")
    tokens = average_tokens(results.benchmarks)
    used = " | tokens used" if tokens is not None else ""
    lines += ["", "| budget | " + " | ".join(names) + f" | {AVERAGE}{used} |", "|---:|" + "---:|" * (len(names) + 1 + bool(used))]
    for j, budget in enumerate(results.settings.budgets):
        cells = [_pct(results.benchmarks[n].scores.accuracy[j]) for n in names] + [_pct(avg.accuracy[j])]
        cells += [f"{tokens[j]:.1f}"] if tokens is not None else []
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(results: EvalResults, path: Path) -> None:
    rows: list[tuple[str, Scores]] = [(n, b.scores) for n, b in results.benchmarks.items()]
    rows.append((AVERAGE, results.average))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "budget", "accuracy", "std"])
        for name, s in rows:
            for budget, acc, std in zip(results.settings.budgets, s.accuracy, s.std, strict=False):
                writer.writerow([name, budget, f"{acc:.6f}", f"{std:.6f}"])


def write_results(results: EvalResults, out: str | Path) -> dict[str, Path]:
    """Write the three files into ``out``; return their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "csv": folder / "results.csv", "md": folder / "results.md"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results_json(results), indent=2) + "\n", encoding="utf-8")
    tmp.replace(paths["json"])
    write_csv(results, paths["csv"])
    paths["md"].write_text(markdown(results), encoding="utf-8")
    return paths
