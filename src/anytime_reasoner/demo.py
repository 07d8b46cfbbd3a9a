"""``anytime-reasoner demo``: the project's main job, on CPU with no downloads.

1. Bootstrap (or reuse from the cache) the tiny base model on the embedded synthetic task.
2. Train GRPO and AnytimeReasoner (``ar_preset``) from it with the same questions per step, the same
   G thinkings per question, the same steps and learning rate: the runs differ only in the preset
   (budgets, prior, A summaries, advantage knobs).
3. Evaluate base, GRPO and AR on the same held-out questions at every budget of the grid, one
   thinking per sample cut at every budget (docs/ALGORITHM.md §9), with the same seed.
4. Print the table; write ``results.json``, ``results.md`` and ``anytime_curves.png``.

Every step is an ordinary ``anytime-reasoner train`` / ``eval`` command (its config and log are kept
in ``out/``), run as a child process with one thread (:mod:`anytime_reasoner.jobs`: forked from a
host that imported torch and transformers once). ``jobs`` of them run at once: the tiny model's
steps are bound by per-operation overhead, so two single-threaded processes on two cores finish
about twice as fast as one process with two threads. Training resumes from its checkpoints and the
evaluation caches finished problems, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from anytime_reasoner.config import (
    PRESETS,
    CompareConfig,
    DemoConfig,
    EngineConfig,
    LengthConfig,
    RolloutConfig,
    RunScale,
    TrainConfig,
    build_config,
    dump,
)
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.errors import check_writable
from anytime_reasoner.eval.plot import curves_of, draw
from anytime_reasoner.jobs import Job, run_jobs
from anytime_reasoner.models.loading import load_tokenizer
from anytime_reasoner.tasks.bootstrap import ensure_base_model
from anytime_reasoner.tasks.synthetic import synthetic_held_out
from anytime_reasoner.train.packing import max_response_len

TASK = "synthetic"
HELD_OUT_FILE = "heldout.jsonl"


def train_config(cfg: RunScale, base_model: Path, preset: str, seed: int, out: Path, max_response_len: int) -> TrainConfig:
    """The RL run of ``preset`` at the run scale: presets with A = 1 or S = 1 keep them (GRPO:
    one budget, one summary); every run gets the same G, questions, steps and learning rate, and
    the same loss constant ``max_response_len``, as the original divides every preset by 10176
    (so a token's gradient has one scale whatever the preset's tree size). Validation (when ``val_every`` > 0) runs on the evaluation grid, so every preset's learning
    curve is measured the same way; it does not touch the training streams."""
    preset_rollout = PRESETS[preset]["rollout"]
    rollout: dict[str, Any] = {"n": cfg.n, "max_budget": cfg.max_budget, "summary_max_tokens": cfg.summary_max_tokens}
    if preset_rollout["n_summary"] > 1:
        rollout["n_summary"] = cfg.n_summary
    if preset_rollout["n_budget_support"] > 1:
        rollout["n_budget_support"] = cfg.n_budget_support
    overrides = {
        "model": {"path": str(base_model), "device": "cpu"},
        "engine": cfg.engine.model_dump(exclude_defaults=True),
        "data": {"val_size": cfg.val_size},
        "rollout": rollout,
        "ppo": {
            "lr": cfg.lr,
            "ppo_mini_batch_size": cfg.batch_size,
            "ppo_max_token_len": 16384,
            "max_response_len": max_response_len,
        },
        "trainer": {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "val_every": cfg.val_every,
            "val_budgets": list(cfg.eval_budgets),
            "val_n": cfg.val_n,
            "val_n_summary": cfg.val_n_summary,
            "val_temperature": cfg.eval_temperature,
            "save_every": max(cfg.steps // 4, 1),
            "out": str(out),
            "seed": seed,
            "progress": False,
            "async_level": cfg.async_level,
        },
    }
    return build_config(TrainConfig, preset=preset, overrides=overrides)


def preflight_run_scale(cfg: DemoConfig | CompareConfig) -> None:
    """``demo`` / ``compare``'s cheap check, before anything runs: the output folder is writable."""
    check_writable(cfg.out, "out")


PROMPT_SUFFIX = "@prompt"  # model name of a preset's prompt-budget evaluation


def prompt_budget_of(preset: str) -> str | None:
    """The budget sentence of a preset that states its budget in the prompt (L1), else None."""
    length = LengthConfig(**PRESETS.get(preset, {}).get("length", {}))
    return length.budget_prompt if length.prompt_budget else None


def eval_args(cfg: RunScale, model: Path, held_out: Path, out: Path, seed: int, budget_prompt: str | None = None) -> list[str]:
    """The ``eval`` command of one model (with ``budget_prompt``: in the prompt-budget mode).
    ``max_prompt_tokens=256``: the embedded task's prompts are at most 76 tokens, and eval's default
    cap of 1024 would not fit the tiny model's 1024 positions next to the budgets (the context check
    counts the cap, not the prompts)."""
    budgets = ",".join(str(b) for b in cfg.eval_budgets)
    mode = ["mode=prompt-budget", f"budget_prompt={budget_prompt}"] if budget_prompt is not None else []
    return [
        "eval", f"model={model}", f"data={held_out}", f"budgets={budgets}", f"samples={cfg.eval_samples}",
        f"temperature={cfg.eval_temperature}", f"summary_max_tokens={cfg.summary_max_tokens}",
        f"seed={seed}", "batch_size=50", "device=cpu", f"out={out}", "progress=false", "max_prompt_tokens=256",
        *engine_args(cfg.engine), *mode,
    ]  # fmt: skip


def engine_args(engine: EngineConfig) -> list[str]:
    """``engine.KEY=VALUE`` for every engine key that differs from its default."""
    return [
        f"engine.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in engine.model_dump(exclude_defaults=True).items()
    ]


def write_held_out(cfg: RunScale, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps(e.to_row()) for e in synthetic_held_out(cfg.eval_size)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def shared_response_len(cfg: RunScale, base: Path) -> int:
    """``cfg.max_response_len``, else the packed-response bound of the largest tree the presets
    use (``n_budget_support`` budgets × ``n_summary`` summaries) with the base model's tokenizer."""
    if cfg.max_response_len is not None:
        return cfg.max_response_len
    tree = RolloutConfig(
        n_summary=cfg.n_summary,
        n_budget_support=cfg.n_budget_support,
        max_budget=cfg.max_budget,
        summary_max_tokens=cfg.summary_max_tokens,
    )
    return max_response_len(tree, TokenizerCodec.from_tokenizer(load_tokenizer(str(base))))


def heavy_first(preset: str) -> int:
    """Sort key: runs with A > 1 summaries take several times longer; start them first."""
    return -PRESETS[preset]["rollout"]["n_summary"]


def twins(presets: Sequence[str]) -> dict[str, str]:
    """``{preset: earlier preset with the same knobs}``: such a preset is the same experiment (the
    seed's table lists ``ar-base`` and ``grpo+vr+decouple`` with equal knobs), so it is trained
    and evaluated once and both names report that run."""
    first: dict[str, str] = {}
    out = {}
    for preset in presets:
        key = json.dumps(PRESETS[preset], sort_keys=True)
        if key in first:
            out[preset] = first[key]
        else:
            first[key] = preset
    return out


@dataclass(frozen=True)
class Layout:
    """Where runs and evaluations of one seed go: ``root/<preset>`` and ``root/eval/<model>``; a
    preset in ``aliases`` uses the folders of the preset it is a twin of."""

    root: Path
    aliases: Mapping[str, str] = field(default_factory=dict)

    def run(self, preset: str) -> Path:
        return self.root / self.aliases.get(preset, preset)

    def eval(self, model: str) -> Path:
        return self.root / "eval" / self.aliases.get(model, model)


def plan_jobs(
    cfg: RunScale, base: Path, presets: Sequence[str], layouts: Mapping[int, Layout], held_out: Path
) -> tuple[list[Job], dict[int, dict[str, Path]]]:
    """For each seed: a training job per preset, then one evaluation per model (the base model's
    needs no training); a preset that states its budget in the prompt is also evaluated in the
    prompt-budget mode, as the model ``<preset>@prompt``. Returns the jobs (trainings first, heavy
    presets first) and, per seed, each model's ``results.json`` path."""
    trains: list[Job] = []
    evals: list[Job] = []
    results: dict[int, dict[str, Path]] = {}
    response_len = shared_response_len(cfg, base)
    for seed, layout in layouts.items():
        suffix = f" s{seed}" if len(layouts) > 1 else ""
        models = {"base": base}
        for preset in presets:
            if preset in layout.aliases:  # a twin: its run and evaluation are another preset's
                continue
            run = layout.run(preset)
            config_path = run / "train_config.yaml"
            config_path.parent.mkdir(parents=True, exist_ok=True)
            config = dump(train_config(cfg, base, preset, seed, run, response_len))
            config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            trains.append(Job(f"train {preset}{suffix}", ["train", "--config", str(config_path)], run / "train.log"))
            models[preset] = run / "final"
        results[seed] = {p: layout.eval(p) / "results.json" for p in presets if p in layout.aliases}
        for name, model in models.items():
            out = layout.eval(name)
            after = () if name == "base" else (f"train {name}{suffix}",)
            evals.append(Job(f"eval {name}{suffix}", eval_args(cfg, model, held_out, out, seed), out / "eval.log", after))
            results[seed][name] = out / "results.json"
            budget_prompt = prompt_budget_of(name)
            if budget_prompt is not None:
                out = layout.eval(name + PROMPT_SUFFIX)
                args = eval_args(cfg, model, held_out, out, seed, budget_prompt)
                evals.append(Job(f"eval {name}{PROMPT_SUFFIX}{suffix}", args, out / "eval.log", after))
                results[seed][name + PROMPT_SUFFIX] = out / "results.json"
    trains.sort(key=lambda j: heavy_first(j.name.split()[1]))  # stable: seed order kept within a weight
    return trains + evals, results


def read_accuracy(path: Path) -> list[float]:
    """The average accuracy per budget of an ``eval`` results file."""
    return list(json.loads(path.read_text(encoding="utf-8"))["average"]["accuracy"])


def read_tokens(path: Path) -> list[float] | None:
    """The average thinking tokens spent per budget of an ``eval`` results file (None if absent)."""
    used = json.loads(path.read_text(encoding="utf-8"))["average"].get("tokens_used")
    return list(used) if used is not None else None


def results_json(cfg: DemoConfig, results: dict[str, Path], seconds: dict[str, float]) -> dict[str, Any]:
    models = {}
    for name, path in results.items():
        acc = read_accuracy(path)
        models[name] = {"accuracy": acc, "mean": sum(acc) / len(acc)}
    return {
        "task": TASK,
        "budgets": list(cfg.eval_budgets),
        "models": {"base": models["base"], "grpo": models["grpo"], cfg.ar_preset: models[cfg.ar_preset]},
        "seed": cfg.seed,
        "settings": dump(cfg),
        "seconds": seconds,
    }


def table_head(budgets: Sequence[int], last: str) -> list[str]:
    """The header and rule lines of a table with a column per budget and a ``last`` column."""
    return ["| model | " + " | ".join(str(b) for b in budgets) + f" | {last} |", "|---|" + "---:|" * (len(budgets) + 1)]


def markdown_table(results: dict[str, Any]) -> str:
    rows = [
        f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in m["accuracy"]) + f" | **{100 * m['mean']:.1f}** |"
        for name, m in results["models"].items()
    ]
    return "\n".join([*table_head(results["budgets"], "mean"), *rows])


def progress_bar(total_steps: int, runs: Sequence[Path], n_evals: int, enabled: bool, desc: str) -> tuple[Any, Any]:
    """A bar over the RL steps of ``runs`` (read from their metrics files) and the evaluations."""
    bar = tqdm(total=total_steps + n_evals, desc=desc, disable=not enabled, dynamic_ncols=True)

    def update(done: set[str]) -> None:
        steps = sum(1 for name in done if name.startswith("eval"))
        for run in runs:
            path = run / "metrics.jsonl"
            if path.is_file():
                with path.open(encoding="utf-8") as handle:
                    steps += sum(1 for _ in handle)
        bar.update(min(steps, bar.total) - bar.n)

    return bar, update


def base_model(cfg: RunScale) -> Path:
    """The base model folder: ``base_model`` if given, else the cached one, assembled from the
    package's shipped weights or, for a seed the package does not ship, bootstrapped."""
    if cfg.base_model:
        return Path(cfg.base_model)
    print("the tiny base model: cached, shipped with the package, or bootstrapped (SFT, minutes) ...", flush=True)
    return ensure_base_model(cfg.cache_dir, seed=cfg.bootstrap_seed, progress=cfg.progress)


def run_demo(cfg: DemoConfig) -> int:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = base_model(cfg)
    seconds = {"bootstrap": round(time.perf_counter() - t0, 1)}
    presets = (cfg.ar_preset, "grpo")
    layout = Layout(out)
    jobs, per_seed = plan_jobs(cfg, base, presets, {cfg.seed: layout}, write_held_out(cfg, out / HELD_OUT_FILE))
    results = per_seed[cfg.seed]
    print(f"demo: base model {base}; training grpo and {cfg.ar_preset} ({cfg.jobs} at a time), logs in {out}/", flush=True)
    runs = [layout.run(p) for p in presets]
    bar, update = progress_bar(len(runs) * cfg.steps, runs, len(results), cfg.progress, "demo: RL steps + evals")
    with bar:
        seconds.update(run_jobs(jobs, cfg.jobs, update))
    seconds["total"] = round(time.perf_counter() - t0, 1)
    summary = results_json(cfg, results, seconds)
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    table = markdown_table(summary)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    draw(curves_of(str(out / "results.json"), None, False), out / "anytime_curves.png", title="Anytime accuracy (held-out)")
    print(
        f"\naccuracy (%) by thinking budget on {cfg.eval_size} held-out questions × {cfg.eval_samples} samples, seed {cfg.seed}:"
    )
    print(table)
    print(f"\n{seconds['total']:.0f}s in all; wrote {out / 'results.json'}, results.md, anytime_curves.png")
    return 0
