"""Asynchronous rollouts: wall time per training step, synchronous vs ``trainer.async_level=1``
and ``2``, on this machine; then the same comparison modelled for the paper's recipe on GPUs
(docs/BENCHMARKS.md, "Asynchronous rollouts").

Measured: the demo's own training run (``demo.train_config``: the demo's scale, the cached
bootstrapped base model) of ``--preset``, trained ``--steps`` steps in this process for each mode,
the modes alternating over ``--reps`` repetitions so each sees the same machine load. The
synchronous loop computes on all ``--threads`` torch threads; an asynchronous run splits them
(``train.async_rollouts``): the rollout worker process gets half, the trainer the rest. A step's
wall time is the trainer's ``time_step`` (take the rollouts → update → publish the policy); the
first k + 1 steps of a lag-k run wait for their rollouts by construction and are left out of the
medians. Printed per mode: median step seconds, the ratio of the synchronous median to it, the
share of the trainer's time spent waiting for rollouts (``time_wait_rollouts``), the share of
the worker's time spent idle (waiting for a policy or a request), and the median seconds of a
step's rollout (synchronous: ``time_rollout``; asynchronous: the worker's ``worker_sample_seconds``)
and update (old log-probs + forward/backward + optimizer), with the old log-probs apart.

Modelled, not measured (``scripts/scaling_table.py``'s phase times for the 1.5B recipe: every
thinking runs to the full budget, HF-engine decoding, A100 figures): synchronous on N GPUs takes
rollout(N) + update(N) a step; lag ≥ 1 with N_t training and N_i inference GPUs takes
max(update(N_t), rollout(N_i)) plus the weight broadcast (the bf16 model over a ``--link-gbps``
link). The model has no long tail of thinking lengths, which is where the field's reported
asynchronous gains mostly come from (a synchronous step waits for its longest thinking).

    python benchmarks/bench_async.py                       # ar-uniform, 8 steps x 3 modes x 2 reps, ~8 min
    python benchmarks/bench_async.py --steps 5 --reps 1
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from anytime_reasoner.config import DemoConfig, build_config
from anytime_reasoner.demo import base_model, shared_response_len, train_config
from anytime_reasoner.train.build import build_trainer

REPO = Path(__file__).resolve().parents[1]


def train_once(preset: str, mode: str, steps: int, threads: int, base: Path, out: Path) -> list[dict]:
    """One run of ``steps`` steps in ``mode`` (``k``: async_level k, the threads split; ``k/t``: the
    worker on t threads, the trainer on all ``threads``) → its metrics."""
    level, _, worker_threads = mode.partition("/")
    demo = build_config(DemoConfig, overrides=[f"steps={steps}", "val_every=0", f"async_level={level}", "progress=false"])
    cfg = train_config(demo, base, preset, seed=0, out=out, max_response_len=shared_response_len(demo, base))
    trainer_keys = {"save_every": 0, "rollout_threads": int(worker_threads or 0)}
    cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update=trainer_keys)})
    torch.set_num_threads(threads)
    trainer = build_trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.verifier.close()
        torch.set_num_threads(threads)  # an asynchronous run gave half to its worker


def lag(mode: str) -> int:
    """The async level of a mode (``k`` or ``k/t``)."""
    return int(mode.partition("/")[0])


def describe(mode: str, threads: int) -> str:
    level, _, worker = mode.partition("/")
    if level == "0":
        return f"synchronous, {threads} threads"
    if worker:
        return f"async_level={level}, trainer {threads} threads + worker {worker}"
    return f"async_level={level}, trainer {max(1, threads - threads // 2)} + worker {max(1, threads // 2)} threads"


def summarize(runs: list[list[dict]], level: int) -> dict[str, float]:
    """Medians over the steady steps (after the first k + 1) of every repetition."""
    steady = [h for history in runs for h in history[level + 1 :]]
    step = statistics.median(h["time_step"] for h in steady)
    waits = sum(h.get("time_wait_rollouts", h["time_rollout"] if level == 0 else 0.0) for h in steady)
    worker = [h for h in steady if "worker_sample_seconds" in h]
    busy = sum(h["worker_sample_seconds"] + h["worker_load_seconds"] for h in worker)
    idle = sum(h["worker_idle_seconds"] for h in worker)
    return {
        "step": step,
        "trainer_wait": waits / sum(h["time_step"] for h in steady),
        "worker_idle": idle / (busy + idle) if worker else float("nan"),
        "rollout": statistics.median(h["time_rollout"] if level == 0 else h["worker_sample_seconds"] for h in steady),
        "update": statistics.median(h["time_old_logprobs"] + h["time_forward_backward"] + h["time_optimizer"] for h in steady),
        "old_logprobs": statistics.median(h["time_old_logprobs"] for h in steady),
    }


def scaling_model(link_gbps: float) -> list[str]:
    """The modelled GPU table (see the module docstring) as markdown lines."""
    spec = importlib.util.spec_from_file_location("scaling_table", REPO / "scripts" / "scaling_table.py")
    table = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = table  # its dataclasses resolve their module through sys.modules
    spec.loader.exec_module(table)
    args = table.parse_args([])
    shape, recipe = table.SHAPES[args.shape], table.load_recipe(args.config, args.preset, args.inserted_tokens)
    hw = table.Hardware(args.gpu_memory_gib, args.peak_tflops, args.hbm_tbps, args.mfu, args.decode_efficiency, args.decode_batch)
    row = {n: table.time_row(shape, recipe, hw, n) for n in range(1, 17)}
    broadcast = 2 * shape.params / (link_gbps * 1e9)  # bf16 weights
    lines = [
        f"Modelled: R1-Distill-Qwen-1.5B shape, {args.preset} recipe, activation checkpointing, weight broadcast "
        f"{broadcast:.2f} s ({link_gbps:g} GB/s)",
        "",
        "| GPUs | synchronous s/step | best split (train + infer) | async s/step | ratio |",
        "|---|---|---|---|---|",
    ]
    for total in (2, 8, 16):
        sync = row[total].step(True)
        best = min(range(1, total), key=lambda t: max(row[t].update(True), row[total - t].rollout))
        split = max(row[best].update(True), row[total - best].rollout) + broadcast
        lines.append(f"| {total} | {sync:,.0f} | {best} + {total - best} | {split:,.0f} | {sync / split:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ar-uniform")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the synchronous loop (split when async)")
    p.add_argument(
        "--modes", default="0,1,2,1/1", help="k = async_level k (0: synchronous), threads split; k/t: the worker on t threads"
    )
    p.add_argument("--link-gbps", type=float, default=25.0, help="weight broadcast bandwidth of the model, GB/s")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    base = base_model(build_config(DemoConfig, overrides=["progress=false"]))
    runs: dict[str, list[list[dict]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
        for rep in range(args.reps):
            for mode in modes:
                history = train_once(
                    args.preset, mode, args.steps, args.threads, base, Path(tmp) / f"m{mode.replace('/', '_')}_r{rep}"
                )
                runs[mode].append(history)
                median = statistics.median(h["time_step"] for h in history[lag(mode) + 1 :])
                print(f"rep {rep} mode {mode}: step median {median:.2f}s", flush=True)
    stats = {mode: summarize(runs[mode], lag(mode)) for mode in modes}
    sync = stats[modes[0]]["step"]
    print(
        f"\n{args.preset}, demo scale, {args.steps} steps x {args.reps} repetitions, {args.threads} threads, "
        f"torch {torch.__version__}\n"
    )
    print(
        "| mode | step s (median) | sync / mode | trainer waits | worker idle | rollout s | update s | of which old log-probs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        s = stats[mode]
        print(
            f"| {describe(mode, args.threads)} | {s['step']:.2f} | {sync / s['step']:.2f}x | {s['trainer_wait']:.0%} | "
            f"{'-' if lag(mode) == 0 else format(s['worker_idle'], '.0%')} | {s['rollout']:.2f} | {s['update']:.2f} | "
            f"{s['old_logprobs']:.2f} |"
        )
    print()
    print("\n".join(scaling_model(args.link_gbps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
