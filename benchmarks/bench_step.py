"""Where a demo training step's time goes, and what tree attention and several trees per row save
(docs/BENCHMARKS.md).

Builds the demo's own training runs (``demo.train_config`` at the demo's scale, the cached
bootstrapped base model) in this process, one per preset × variant, and steps them in turn (step 1
of each, then step 2 of each, …) so every variant sees the same machine load. Variants:

    dense      one tree per row, dense [N, 1, T, T] tree mask (model.attention=dense, ppo.multi_tree_rows=false)
    tree       one tree per row, tree attention (model.attention=tree)
    tree+rows  several trees per row, tree attention (the default on CPU; rollout.one_pass=auto)
    one-pass   tree+rows with rollout.one_pass=true: the last cut's first answer in the thinking's pass
    two-phase  tree+rows with rollout.one_pass=false: every answer from a second encoding of its prefix
    generate   tree+rows sampling with transformers' ``model.generate`` instead of the engine's own loop
               (engine/decode.py: the same tokens, a KV cache reserved up front)
    re-encode  tree+rows with every summary prefix encoded anew (engine.prefix_caching=false) instead
               of taken from the thinking's held cache (engine/prefix_cache.py)
    row-forks  tree+rows with the summaries' heads forked row by row from the held cache (each row its
               own copy, the engine's held_attention=False) instead of read in place, once per
               thinking (engine/held_attention.py)
    full-batch tree+rows with finished rows kept in the model's batch to the end of a sampling call
               (the engine's shrink_at=None) instead of leaving it
    one-bucket tree+rows with every trunk (and every summary block) of a micro-batch in one
               sdpa call, padded to the longest, instead of in buckets of similar lengths
    multinomial tree+rows drawing each token with generate's torch.multinomial (the engine's
               draw="multinomial") instead of by inverse CDF
    unshared   tree+rows with every tree carrying its own prompt copy (ppo.share_prompts=false)
               instead of a question's trees in one row reading one prompt
 Every step is the trainer's real ``train_step``; the phases are its timing metrics:

    thinking, summary, grading     (inside the rollout)
    packing, old_logprobs, forward_backward, optimizer   (the update)
    other = time_step − all of the above (advantages, metrics, gathering)

Prints per run the median seconds of each phase over the steps, its share of the median step, the
update's padding share (pad tokens / tokens run through the model), and per preset the ratios of
update time (old log-probs + forward/backward) and step time of ``dense`` to each variant, and of
generation (thinking + summary phases) of ``two-phase`` to ``one-pass``, of ``re-encode``, ``row-forks``, ``generate``, ``full-batch`` and ``multinomial`` to ``tree+rows``,
and of the update and the tokens it runs of ``unshared`` to ``tree+rows``.

    python benchmarks/bench_step.py                        # ar-uniform and grpo, 4 steps each, ~6 min
    python benchmarks/bench_step.py --presets ar-uniform --steps 2
    python benchmarks/bench_step.py --variants one-pass,two-phase --steps 5   # generation with and without one pass
    python benchmarks/bench_step.py --variants tree+rows,generate --steps 5   # the engine's loop against generate()
    python benchmarks/bench_step.py --presets ar-uniform --variants tree+rows,re-encode --steps 5   # summaries held vs re-encoded
    python benchmarks/bench_step.py --presets ar-uniform --variants tree+rows,row-forks --steps 5   # heads read in place vs forked per row

One thread per process by default, as the demo runs its jobs (``--threads`` sets torch's threads). With
both presets and ``tree+rows``, it also prints an ``ar-uniform`` step's generation over a GRPO step's,
as medians and step by step (the two run in turn, so each pair saw the same load):

    python benchmarks/bench_step.py --presets grpo,ar-uniform --variants tree+rows --steps 12 --threads 2   # ~1.5 min
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

PHASES = ("thinking", "summary", "grading", "packing", "old_logprobs", "forward_backward", "optimizer")


VARIANTS = {  # attention, several trees per row, rollout.one_pass, engine decoder, summaries forked from the held cache
    "dense": ("dense", False, "auto", "loop", True),
    "tree": ("tree", False, "auto", "loop", True),
    "tree+rows": ("tree", True, "auto", "loop", True),
    "one-pass": ("tree", True, True, "loop", True),
    "two-phase": ("tree", True, False, "loop", True),
    "generate": ("tree", True, "auto", "generate", True),
    "re-encode": ("tree", True, "auto", "loop", False),
    "row-forks": ("tree", True, "auto", "loop", True),
    "full-batch": ("tree", True, "auto", "loop", True),
    "multinomial": ("tree", True, "auto", "loop", True),
    "one-bucket": ("tree", True, "auto", "loop", True),
    "unshared": ("tree", True, "auto", "loop", True),
}
PPO = {"unshared": {"share_prompts": False}}  # update settings of the variants that change the row layout only
ENGINE = {  # engine settings of the variants that change the sampling loop only (engine/decode.py)
    "full-batch": {"shrink_at": None},  # finished rows stay in the model's batch to the end
    "multinomial": {"draw": "multinomial"},  # generate's draw (an exponential variate per vocabulary entry)
    "row-forks": {"held_attention": False},  # each summary row its own copy of its head (engine/prefix_cache.fork)
}


def demo_base_model(threads: int = 1) -> Path:
    """``threads`` torch threads (one as the demo runs its jobs), and the demo's shipped base model (unpacked once)."""
    import torch

    from anytime_reasoner.tasks.bootstrap import ensure_base_model

    torch.set_num_threads(threads)
    return ensure_base_model(None, seed=0, progress=True)


def build(preset: str, variant: str, base: Path, out: Path, steps: int):
    from anytime_reasoner.config import DemoConfig
    from anytime_reasoner.demo import shared_response_len, train_config
    from anytime_reasoner.train.build import build_trainer

    scale = DemoConfig()
    cfg = train_config(scale, base, preset, seed=0, out=out, max_response_len=shared_response_len(scale, base))
    attention, multi_tree, one_pass, decoder, prefix_caching = VARIANTS[variant]
    cfg = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"attention": attention}),
            "rollout": cfg.rollout.model_copy(update={"one_pass": one_pass}),
            "ppo": cfg.ppo.model_copy(update={"multi_tree_rows": multi_tree, **PPO.get(variant, {})}),
            "trainer": cfg.trainer.model_copy(update={"steps": steps, "save_every": 10_000, "val_every": 0}),
        }
    )
    trainer = build_trainer(cfg)
    trainer.engine.decoder = decoder  # a TransformersEngine (the demo's engine)
    trainer.engine.prefix_caching = prefix_caching
    for name, value in ENGINE.get(variant, {}).items():
        setattr(trainer.engine, name, value)
    return trainer


@contextlib.contextmanager
def one_bucket(on: bool):
    """Tree attention with every kind of segment in one sdpa call (no buckets of similar lengths),
    for the steps of the ``one-bucket`` variant only."""
    from anytime_reasoner.train import tree_attention

    bucketed = tree_attention.buckets
    if on:
        tree_attention.buckets = lambda lengths, *args, **kwargs: bucketed(lengths, ratio=0.0)
    try:
        yield
    finally:
        tree_attention.buckets = bucketed


def row(name: str, history: list[dict]) -> dict[str, float]:
    step = statistics.median(h["time_step"] for h in history)
    phases = {p: statistics.median(h[f"time_{p}"] for h in history) for p in PHASES}
    phases["other"] = max(step - sum(phases.values()), 0.0)
    padding = statistics.mean(h["padding_share"] for h in history)
    tokens = statistics.median(h["row_tokens"] for h in history)
    cells = " | ".join(f"{phases[p]:.2f} s ({phases[p] / step:.0%})" for p in (*PHASES, "other"))
    print(f"| {name} | {step:.2f} s | {cells} | {padding:.1%} |", flush=True)
    generation = phases["thinking"] + phases["summary"]
    return {
        "step": step,
        "update": phases["old_logprobs"] + phases["forward_backward"],
        "padding": padding,
        "tokens": tokens,
        "generation": generation,
        "thinking": phases["thinking"],
        "summary": phases["summary"],
    }


def generation(history: dict) -> float:
    """A step's generation: its thinking and summary phases."""
    return history["time_thinking"] + history["time_summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="ar-uniform,grpo")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"a subset of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as the demo runs its jobs)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]

    base = demo_base_model(args.threads)
    presets = [p for p in args.presets.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {(p, v): build(p, v, base, Path(tmp) / f"{p}-{v}", args.steps) for p in presets for v in variants}
        histories: dict[tuple[str, bool], list[dict]] = {key: [] for key in trainers}
        try:
            for step in range(1, args.steps + 1):
                for key, trainer in trainers.items():
                    with one_bucket(key[1] == "one-bucket"):
                        histories[key].append(trainer.train_step(step))
                    print(f"step {step} {key}: {histories[key][-1]['time_step']:.2f} s", flush=True)
        finally:
            for trainer in trainers.values():
                trainer.verifier.close()
    head = " | ".join(PHASES + ("other",))
    print(f"\nmedians over {args.steps} steps (share of the median step)\n")
    print(f"| run | step | {head} | update padding |")
    print("|" + "---|" * (len(PHASES) + 4))
    rows = {key: row(f"{key[0]}, {key[1]}", h) for key, h in histories.items()}
    print()
    if ("ar-uniform", "tree+rows") in rows and ("grpo", "tree+rows") in rows:
        ar, grpo = histories[("ar-uniform", "tree+rows")], histories[("grpo", "tree+rows")]
        per_step = [generation(a) / generation(g) for a, g in zip(ar[1:], grpo[1:], strict=True)]  # step 1 (warm-up) dropped
        print(
            f"ar-uniform ÷ grpo (tree+rows): generation (thinking + summary) {rows[('ar-uniform', 'tree+rows')]['generation']:.2f} s ÷ "
            f"{rows[('grpo', 'tree+rows')]['generation']:.2f} s = "
            f"{rows[('ar-uniform', 'tree+rows')]['generation'] / rows[('grpo', 'tree+rows')]['generation']:.2f}×; "
            f"step by step (steps 2–{args.steps}, the two run in turn): median {statistics.median(per_step):.2f}×, "
            f"range {min(per_step):.2f}–{max(per_step):.2f}×"
        )
    for p in presets:
        if "dense" in variants:
            base_row = rows[(p, "dense")]
            for v in [v for v in ("tree", "tree+rows") if v in variants]:
                r = rows[(p, v)]
                print(
                    f"{p}: dense ÷ {v}: update (old log-probs + forward/backward) {base_row['update'] / r['update']:.2f}×, "
                    f"step {base_row['step'] / r['step']:.2f}×; padding {base_row['padding']:.1%} → {r['padding']:.1%}"
                )
        if "one-bucket" in variants and "tree+rows" in variants:
            one, bucketed = rows[(p, "one-bucket")], rows[(p, "tree+rows")]
            print(
                f"{p}: one bucket ÷ buckets: update (old log-probs + forward/backward) {one['update']:.2f} s ÷ "
                f"{bucketed['update']:.2f} s = {one['update'] / bucketed['update']:.2f}×, step {one['step'] / bucketed['step']:.2f}×"
            )
        if "unshared" in variants and "tree+rows" in variants:
            own, shared = rows[(p, "unshared")], rows[(p, "tree+rows")]
            print(
                f"{p}: a prompt per tree ÷ a prompt per question: update (old log-probs + forward/backward) "
                f"{own['update']:.2f} s ÷ {shared['update']:.2f} s = {own['update'] / shared['update']:.2f}×, tokens run "
                f"{own['tokens']:.0f} ÷ {shared['tokens']:.0f} = {own['tokens'] / shared['tokens']:.2f}×, step {own['step'] / shared['step']:.2f}×"
            )
        if "two-phase" in variants and "one-pass" in variants:
            two, one = rows[(p, "two-phase")], rows[(p, "one-pass")]
            print(
                f"{p}: two-phase ÷ one pass: generation (thinking + summary) {two['generation']:.2f} s ÷ "
                f"{one['generation']:.2f} s = {two['generation'] / one['generation']:.2f}×, step {two['step'] / one['step']:.2f}×"
            )
        for v in [v for v in ("re-encode", "row-forks") if v in variants and "tree+rows" in variants]:
            if rows[(p, "tree+rows")]["summary"] > 0.01:  # (GRPO has no summary phase: one pass)
                other, held = rows[(p, v)], rows[(p, "tree+rows")]
                print(
                    f"{p}: {v} ÷ tree+rows: summary phase {other['summary']:.2f} s ÷ {held['summary']:.2f} s = "
                    f"{other['summary'] / held['summary']:.2f}×, generation {other['generation'] / held['generation']:.2f}×, "
                    f"step {other['step'] / held['step']:.2f}×"
                )
        for v in [v for v in ("generate", "full-batch", "multinomial") if v in variants and "tree+rows" in variants]:
            other, loop = rows[(p, v)], rows[(p, "tree+rows")]
            print(
                f"{p}: {v} ÷ tree+rows: thinking {other['thinking']:.2f} s ÷ {loop['thinking']:.2f} s = "
                f"{other['thinking'] / loop['thinking']:.2f}×, generation (thinking + summary) {other['generation']:.2f} s ÷ "
                f"{loop['generation']:.2f} s = {other['generation'] / loop['generation']:.2f}×, step {other['step'] / loop['step']:.2f}×"
            )


if __name__ == "__main__":
    main()
