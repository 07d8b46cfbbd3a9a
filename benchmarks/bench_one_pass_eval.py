"""One-pass anytime evaluation vs re-running generation for every budget, for k = 4 and k = 8 budgets.

Both paths use the project's own ``eval.runner.evaluate`` on the same problems, model and settings:

- one-pass:   ONE evaluation over the whole grid b_1 < … < b_k: each thinking is sampled once up to
              b_k and cut at every budget, one summary per budget (docs/ALGORITHM.md §9, what ``eval`` does);
- per-budget: k evaluations with the single budget b_j each: a fresh thinking up to b_j for every
              budget, then its summary (the pitfall docs/ALGORITHM.md §10 warns about).

Both sample the same number of summaries (problems × samples × k). The model is a random 2-layer,
hidden-64 Qwen2 over a byte-level vocabulary (it rarely closes its thinking, so thinkings run to
their cap: the worst case for per-budget generation is also its typical case). Grading uses a
constant verifier (no answers to find in random text), so only generation is timed. Prints the
median wall time over repeats, the ratio, and the thinking tokens each path sampled (expected
ratio of thinking tokens for an even grid: Σ_j b_j / b_k = (k + 1) / 2).

    python benchmarks/bench_one_pass_eval.py                  # ~1-2 min on 2 (shared) CPU cores
    python benchmarks/bench_one_pass_eval.py --max-budget 256 --problems 8 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.eval.runner import EvalSettings, evaluate
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.rewards.base import Grade

SPECIALS = ("<pad>", "<eos>", "<think>", "</think>")


class NoAnswers:
    """Every response wrong: random text holds no answer (keeps grading out of the timing)."""

    def grade(self, responses: Sequence[str], ground_truths) -> list[Grade]:
        return [Grade(correct=False, well_formed=True, extracted=None) for _ in responses]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level: byte b is token b (GPT-2's byte → printable map); the special tokens follow from 256."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = {b: chr(b) for b in keep}
    chars.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in keep)})
    core = Tokenizer(models.BPE(vocab={ch: b for b, ch in chars.items()}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIALS))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", padding_side="left")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return tok


def make_model(vocab: int, pad: int, eos: int, device: str) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device).eval()


def problems(n: int) -> list[Example]:
    return [Example.from_problem(f"p{i}", "bench", f"What is {17 * i + 3} + {29 * i + 5}?", (str(46 * i + 8),)) for i in range(n)]


def _thinking_tokens(results) -> int:
    return sum(n for rows in results.problems.values() for r in rows for n in r.lengths)


def one_pass(engine, codec, data, base: EvalSettings, grid: tuple[int, ...]) -> int:
    """One evaluation over the whole grid; returns the thinking tokens it sampled."""
    return _thinking_tokens(evaluate(engine, codec, NoAnswers(), data, replace(base, budgets=grid)))


def per_budget(engine, codec, data, base: EvalSettings, grid: tuple[int, ...]) -> int:
    """One evaluation per budget (fresh thinkings each time); returns the thinking tokens sampled."""
    return sum(_thinking_tokens(evaluate(engine, codec, NoAnswers(), data, replace(base, budgets=(b,)))) for b in grid)


def measure(fn, engine, codec, data, base, grid, repeats: int, device: str) -> tuple[float, int]:
    """Median seconds over repeats, and the thinking tokens sampled by the last run."""
    times, tokens = [], 0
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = fn(engine, codec, data, base, grid)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2, help="thinkings per problem")
    parser.add_argument("--max-budget", type=int, default=48)
    parser.add_argument("--ks", default="4,8", help="numbers of budgets to compare")
    parser.add_argument("--summary-max-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    tok = byte_tokenizer()
    codec = TokenizerCodec.from_tokenizer(tok)
    model = make_model(len(tok), codec.pad_id, codec.eos_id, args.device)
    engine = TransformersEngine(model, codec.pad_id)
    data = {"bench": problems(args.problems)}
    base = EvalSettings(
        model="random",
        budgets=(args.max_budget,),
        samples=args.samples,
        protocol=AnytimeProtocol(summary_max_tokens=args.summary_max_tokens),
        batch_size=args.problems,
        temperature=1.0,
    )
    one_pass(engine, codec, data, base, (8,))  # warm-up

    rows = args.problems * args.samples
    print(
        f"device={args.device} problems={args.problems} samples={args.samples} max_budget={args.max_budget} "
        f"summary_max_tokens={args.summary_max_tokens} repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print(f"{'k':>2}  {'budgets':<28} {'one-pass s':>10} {'per-budget s':>12} {'ratio':>6}  thinking tokens one/per")
    for k in (int(x) for x in args.ks.split(",")):
        grid = tuple(round(j * args.max_budget / k) for j in range(1, k + 1))
        t_one, n_one = measure(one_pass, engine, codec, data, base, grid, args.repeats, args.device)
        t_per, n_per = measure(per_budget, engine, codec, data, base, grid, args.repeats, args.device)
        shown = ",".join(map(str, grid))
        print(
            f"{k:>2}  {shown:<28} {t_one:>10.2f} {t_per:>12.2f} {t_per / t_one:>5.2f}x  {n_one}/{n_per} "
            f"(all to cap: {rows * grid[-1]}/{rows * sum(grid)})"
        )


if __name__ == "__main__":
    main()
