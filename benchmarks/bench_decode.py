"""The engine's own sampling loop (engine/decode.py) against transformers' ``model.generate``, on the
demo's real rollouts (docs/BENCHMARKS.md, "The engine's sampling loop").

Builds the demo's training runs (``bench_step.build``: the shipped base model, the demo's scale) for
each preset three times, one engine each, and samples the rollouts of steps 1..``--steps`` with each
in turn (no update in between, so all decode the same policy):

    generate   the engine with transformers' ``model.generate``
    parity     the engine's loop as ``generate`` samples: its draw (``torch.multinomial``), finished
               rows kept in the batch, summary prefixes encoded anew (``draw="multinomial"``,
               ``shrink_at=None``, ``prefix_caching=False``)
    loop       the engine's loop as it runs by default: finished rows leave the batch, tokens drawn
               by inverse CDF (the same distribution, other samples), summaries forked from the
               thinking's held KV cache

The ``parity`` and ``generate`` rollouts of a step must hold the same thinkings and summaries
(tokens, log-probs, rewards); the script stops if they differ. Prints per preset the median time of
the thinking and summary phases with each engine and the ratios.

    python benchmarks/bench_decode.py                  # grpo and ar-uniform, 5 steps, ~3 min
    python benchmarks/bench_decode.py --presets grpo --steps 10

One thread (``OMP_NUM_THREADS=1``), as the demo runs its jobs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench_step import build, demo_base_model

DECODERS = {"generate": "generate", "parity": "tree+rows", "loop": "tree+rows"}  # bench_step's variants
# the engine settings that sample what generate samples: its draw, finished rows kept, and every summary
# prefix encoded anew (a prefix forked from the thinking's held KV cache agrees to float rounding only)
PARITY = {"draw": "multinomial", "shrink_at": None, "prefix_caching": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="grpo,ar-uniform")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    base = demo_base_model()
    print("| preset | phase | generate() | loop, generate's draw | loop | generate ÷ parity | generate ÷ loop |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for preset in [p for p in args.presets.split(",") if p]:
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {d: build(preset, v, base, Path(tmp) / d, args.steps) for d, v in DECODERS.items()}
            for name, value in PARITY.items():
                setattr(trainers["parity"].engine, name, value)
            times: dict[str, dict[str, list[float]]] = {d: {"thinking": [], "summary": []} for d in trainers}
            try:
                for step in range(1, args.steps + 1):
                    sampled = {}
                    for d, trainer in trainers.items():
                        sampled[d] = trainer.sample(step, trainer.plan).rollouts
                        for phase in ("thinking", "summary"):
                            times[d][phase].append(sampled[d].timings[phase])
                    if sampled["parity"].thinkings != sampled["generate"].thinkings:  # tokens, log-probs, rewards
                        raise SystemExit(
                            f"{preset} step {step}: the loop with generate's draw sampled other tokens than generate()"
                        )
            finally:
                for trainer in trainers.values():
                    trainer.verifier.close()
        for phase in ("thinking", "summary", "both"):
            med = {
                d: statistics.median(
                    [a + b for a, b in zip(t["thinking"], t["summary"], strict=True)] if phase == "both" else t[phase]
                )
                for d, t in times.items()
            }
            if med["loop"] >= 0.01:  # GRPO has no summary phase
                print(
                    f"| {preset} | {phase} | {med['generate']:.2f} s | {med['parity']:.2f} s | {med['loop']:.2f} s | "
                    f"{med['generate'] / med['parity']:.2f}× | {med['generate'] / med['loop']:.2f}× |"
                )
    print(f"\nmedians over {args.steps} steps; generate's and the parity loop's rollouts equal token for token at every step")


if __name__ == "__main__":
    main()
