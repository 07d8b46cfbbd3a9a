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
from pathlib import Path

from bench_step import build, demo_base_model, one_bucket


def packed_batch_of_step_two(trainer):
    """Train step 1, then step 2 while keeping the packed batch its update ran on."""
    trainer.train_step(1)
    train_on, kept = trainer.train_on, []
    trainer.train_on = lambda packed: kept.append(packed) or train_on(packed)
    trainer.train_step(2)
    trainer.train_on = train_on
    return kept[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="grpo,ar-uniform")
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()

    from anytime_reasoner.train.tree_attention import TreeLayout

    base = demo_base_model()
    print("| preset | segments (n × longest, per bucket) | buckets | one bucket | one bucket ÷ buckets |")
    print("|---|---|---:|---:|---:|")
    for preset in [p for p in args.presets.split(",") if p]:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build(preset, "tree+rows", base, Path(tmp) / preset, 3)
            try:
                packed = packed_batch_of_step_two(trainer)
                layout = TreeLayout.of(packed)
                shapes = ", ".join(f"{g.query_index.shape[0]}×{g.key_index.shape[1]}" for g in layout.trunks + layout.blocks)
                times: dict[bool, list[float]] = {False: [], True: []}
                for _ in range(args.reps):
                    for single in (False, True):
                        with one_bucket(single):
                            start = time.perf_counter()
                            trainer.train_on(packed)
                            times[single].append(time.perf_counter() - start)
            finally:
                trainer.verifier.close()
        bucketed, single = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {preset} | {shapes} | {bucketed:.3f} s | {single:.3f} s | {single / bucketed:.2f}× |", flush=True)
    print(f"\nmedians over {args.reps} updates of the same packed batch each way, alternating")


if __name__ == "__main__":
    main()
