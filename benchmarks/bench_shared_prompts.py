"""The update with a question's trees in one row reading one prompt against every tree carrying its
own prompt copy, on the same packed batch (docs/BENCHMARKS.md, "One prompt per question").

Builds the demo's training run of each preset (``bench_step.build``: the shipped base model, the
demo's scale), trains step 1, takes the packed batch of step 2 and runs the update on it
(``Trainer.train_on``: old log-probs, forward, backward, optimizer step) ``--reps`` times each way,
alternating: ``shared`` as the trainer runs (``ppo.share_prompts``), ``own`` with one prompt copy per
tree. The batch is the same each time, so the ratio is the prompt copies alone. Prints the median
seconds of each, their ratio, and the tokens each way runs through the model.

    python benchmarks/bench_shared_prompts.py           # grpo and ar-uniform, 6 repetitions, ~3 min

One thread (``OMP_NUM_THREADS=1``), as the demo runs its jobs.
"""

from __future__ import annotations

import contextlib

from bench_buckets import alternating_updates, arguments
from bench_step import demo_base_model


@contextlib.contextmanager
def prompts(trainer, share: bool):
    """The trainer's updates with ``ppo.share_prompts=share`` inside the block."""
    before = trainer.cfg
    trainer.cfg = before.model_copy(update={"ppo": before.ppo.model_copy(update={"share_prompts": share})})
    try:
        yield
    finally:
        trainer.cfg = before


def main() -> None:
    args = arguments(__doc__)

    base = demo_base_model()
    print("| preset | trees | tokens run: own prompts | shared | update: own prompts | shared | own ÷ shared |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ways = {"shared": lambda trainer: prompts(trainer, True), "own": lambda trainer: prompts(trainer, False)}
    for preset in args.presets:
        packed, seconds, metrics = alternating_updates(preset, base, args.reps, ways)
        own, shared = seconds["own"], seconds["shared"]
        tokens = {name: metrics[name]["row_tokens"] for name in ways}
        print(
            f"| {preset} | {packed.n_rows} | {tokens['own']:.0f} | {tokens['shared']:.0f} | {own:.3f} s | {shared:.3f} s | "
            f"{own / shared:.2f}× |",
            flush=True,
        )
    print(f"\nmedians over {args.reps} updates of the same packed batch each way, alternating")


if __name__ == "__main__":
    main()
