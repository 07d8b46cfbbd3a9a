"""Tree attention with segments in buckets of similar lengths against one bucket per kind of segment,
on the same packed batch (docs/BENCHMARKS.md, "Buckets of similar lengths").

Builds the demo's training run of each preset (``bench_step.build``: the shipped base model, the
demo's scale), trains step 1, takes the packed batch of step 2 and runs the update on it
(``Trainer.train_on``: forward, backward, optimizer step) ``--reps`` times each way, alternating:
``buckets`` as the trainer runs, ``one bucket`` with every trunk (and every summary block) of a
micro-batch in one sdpa call, padded to the longest (``bench_step.one_bucket``). The batch is the
same each time, so the ratio is the attention's padding alone (the weights move a little between
repetitions; the work does not). Prints the median seconds of each and their ratio, and the segment
shapes of the first micro-batch.

    python benchmarks/bench_buckets.py                  # grpo and ar-uniform, 6 repetitions, ~2 min

One thread (``OMP_NUM_THREADS=1``), as the demo runs its jobs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench_step import build, demo_base_model, one_bucket


def packed_batch_of_step_two(trainer):
    """Train step 1, then step 2 while keeping the packed batch its update ran on."""
    trainer.train_step(1)
    train_on, kept = trainer.train_on, []
    trainer.train_on = lambda packed: kept.append(packed) or train_on(packed)
    trainer.train_step(2)
    trainer.train_on = train_on
    return kept[0]


def alternating_updates(preset: str, base, reps: int, ways: dict[str, Callable[[Any], AbstractContextManager]]):
    """The packed batch of step 2 of ``preset``'s demo run, and ``reps`` updates of it each way,
    alternating: ``ways[name](trainer)`` is the context an update of that way runs in. Returns the
    packed batch, the median seconds of each way and each way's metrics of its last update."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(preset, "tree+rows", base, Path(tmp) / preset, 3)
        try:
            packed = packed_batch_of_step_two(trainer)
            times: dict[str, list[float]] = {name: [] for name in ways}
            metrics: dict[str, dict[str, float]] = {}
            for _ in range(reps):
                for name, way in ways.items():
                    with way(trainer):
                        start = time.perf_counter()
                        metrics[name] = trainer.train_on(packed)
                        times[name].append(time.perf_counter() - start)
        finally:
            trainer.verifier.close()
    return packed, {name: statistics.median(t) for name, t in times.items()}, metrics


def arguments(doc: str | None) -> argparse.Namespace:
    """``--presets`` (comma-separated) and ``--reps`` of a benchmark that updates one batch several ways."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="grpo,ar-uniform", type=lambda text: [p for p in text.split(",") if p])
    parser.add_argument("--reps", type=int, default=6)
    return parser.parse_args()


def main() -> None:
    args = arguments(__doc__)

    from anytime_reasoner.train.tree_attention import TreeLayout

    base = demo_base_model()
    print("| preset | segments (n × longest, per bucket) | buckets | one bucket | one bucket ÷ buckets |")
    print("|---|---|---:|---:|---:|")
    ways = {"buckets": lambda trainer: one_bucket(False), "one bucket": lambda trainer: one_bucket(True)}
    for preset in args.presets:
        packed, seconds, _ = alternating_updates(preset, base, args.reps, ways)
        layout = TreeLayout.of(packed)
        shapes = ", ".join(f"{g.query_index.shape[0]}×{g.key_index.shape[1]}" for g in layout.trunks + layout.blocks)
        bucketed, single = seconds["buckets"], seconds["one bucket"]
        print(f"| {preset} | {shapes} | {bucketed:.3f} s | {single:.3f} s | {single / bucketed:.2f}× |", flush=True)
    print(f"\nmedians over {args.reps} updates of the same packed batch each way, alternating")


if __name__ == "__main__":
    main()
