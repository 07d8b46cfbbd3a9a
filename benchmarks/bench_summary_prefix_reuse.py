"""Summary phase of the anytime rollout: prefix reuse vs re-encoding the prefix for every summary.

Builds B×G random thinkings of 200–400 tokens (half closed with think-end before 300, so the
budgets past their end share a prefix), cuts them at S = 4 budgets (100, 200, 300, 400) with the rollout's own
``summary_requests`` (one prefix per distinct cut, n = A × budgets sharing it), and times
``TransformersEngine.sample`` on those requests twice, side by side in one run:

- reuse:     each distinct prefix is prefilled once, its cache gathered n-fold (the default);
- re-encode: ``reuse_prefix=False``, every summary row re-encodes its whole prefix.

Both sample the same number of summary tokens (no stop ids: every row runs to the cap), with a
random 4-layer, hidden-256 Qwen2. Prints the median time over repeats, the ratio, and the prefix
tokens each path ran through the model.

    python benchmarks/bench_summary_prefix_reuse.py            # ~1 min on one CPU thread
    python benchmarks/bench_summary_prefix_reuse.py --device cuda --questions 8
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from common import random_qwen2

from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.protocol import InsertedIds
from anytime_reasoner.rollout.anytime import summary_requests
from anytime_reasoner.rollout.types import Thinking

VOCAB = 4096
PAD, EOS, THINK_END = 0, 1, 2
BUDGETS = (100, 200, 300, 400)


def make_model(device: str):
    model = random_qwen2(VOCAB, 256, 4, 8, 4, 768, max_positions=2048, pad_token_id=PAD, eos_token_id=EOS)
    return model.to(device).eval()


def make_thinkings(questions: int, per_question: int, rng: random.Random) -> list[list[Thinking]]:
    """Every other thinking closes with think-end after 200–300 tokens (budgets 300 and 400 then
    share its prefix); the others run to the cap of 400 tokens."""
    rows = []
    for _ in range(questions):
        prompt = [rng.randrange(3, VOCAB) for _ in range(rng.randrange(40, 80))]
        row = []
        for g in range(per_question):
            closed = g % 2 == 0
            length = rng.randrange(200, 301) if closed else BUDGETS[-1]
            ids = [rng.randrange(3, VOCAB) for _ in range(length - closed)] + [THINK_END] * closed
            row.append(Thinking(prompt_ids=prompt, thinking_ids=ids, closed=closed, cuts=[]))
        rows.append(row)
    return rows


def time_engine(engine: TransformersEngine, prefixes, counts, params, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.sample(prefixes, counts, params)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--questions", type=int, default=1, help="B")
    parser.add_argument("--thinkings", type=int, default=4, help="G per question")
    parser.add_argument("--summaries", type=int, default=4, help="A per budget")
    parser.add_argument("--summary-max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = random.Random(0)
    model = make_model(args.device)
    thinkings = make_thinkings(args.questions, args.thinkings, rng)
    inserted = InsertedIds(closed=(5, 6, 7), forced=(8, 9, THINK_END, 5, 6, 7))
    requests = summary_requests(thinkings, BUDGETS, inserted)
    prefixes = [r.prefix for r in requests]
    counts = [args.summaries * len(r.group.budget_indices) for r in requests]
    params = SamplingParams(max_new_tokens=args.summary_max_tokens, temperature=1.0, stop_token_ids=(), seed=0)

    engines = {
        "reuse": TransformersEngine(model, PAD, max_batch_rows=args.max_batch_rows),
        "re-encode": TransformersEngine(model, PAD, max_batch_rows=args.max_batch_rows, reuse_prefix=False),
    }
    for engine in engines.values():  # warm-up, then reset the counters
        engine.sample(prefixes[:2], 1, SamplingParams(max_new_tokens=2, seed=0))
        engine.stats = type(engine.stats)()
    timings = {name: time_engine(e, prefixes, counts, params, args.repeats, args.device) for name, e in engines.items()}

    rows = sum(counts)
    print(
        f"device={args.device} B={args.questions} G={args.thinkings} S={len(BUDGETS)} A={args.summaries} "
        f"summary_max_tokens={args.summary_max_tokens} repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print(
        f"distinct prefixes={len(prefixes)} (of {args.questions * args.thinkings * len(BUDGETS)} budget cuts), "
        f"summary rows={rows}, mean prefix length={sum(map(len, prefixes)) / len(prefixes):.0f}"
    )
    for name, engine in engines.items():
        encoded = engine.stats.prefill_tokens // args.repeats
        split = f"prefill {engine.stats.prefill_seconds / args.repeats:.3f} s + generate {engine.stats.generate_seconds / args.repeats:.3f} s"
        print(f"{name:>10}: median {timings[name]:.3f} s ({split} per run)   prefix tokens encoded per run: {encoded}")
    print(f"speed-up (re-encode / reuse): {timings['re-encode'] / timings['reuse']:.2f}x")
    decode = engines["reuse"].stats.generate_seconds / args.repeats  # the summaries' decoding, which both paths run
    print(
        f"bound with a free prefill (re-encode / reuse's generate time alone): {timings['re-encode'] / decode:.2f}x; "
        f"the prefill is {engines['reuse'].stats.prefill_seconds / args.repeats / timings['reuse']:.0%} of reuse's time"
    )


if __name__ == "__main__":
    main()
