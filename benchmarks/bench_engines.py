"""The anytime rollout through both engines side by side: transformers ``generate`` vs vLLM (CPU).

One anytime batch per model, sampled the way ``rollout.anytime`` samples it:

1. thinking phase: B prompts × G thinkings, every one to the largest budget (no stop ids, so both
   engines generate exactly the same number of tokens);
2. summary phase: every thinking cut at S budgets, ``prompt + thinking[:cut] + inserted`` sent
   once with n = A (``rollout.anytime.summary_requests``), A summaries of ``cap`` tokens each.

Timed for each engine (median over ``--repeats``, one process, the same threads):

- transformers: summary phase with prefix reuse (one prefill per prefix, cache gathered n-fold)
  and with ``reuse_prefix=False`` (every summary re-encodes its prefix);
- vLLM: summary phase with the prefix cache on (the thinkings' blocks, cached while they were
  generated, are found again) and off (a second engine with ``enable_prefix_caching=False``).

Models (random weights; speed does not depend on them): the embedded tiny model's shape
(0.45M parameters, widened to heads of 32 for vLLM's CPU kernels, ``tasks.widen``) and a
~25M-parameter Llama (hidden 512, 8 layers, heads of 64). Prints a markdown table: tokens/s of
each phase and each engine, and the ratios measured in this run.

    python benchmarks/bench_engines.py                # needs vLLM (CI's .venv-vllm); ~25 min on 2 cores
    python benchmarks/bench_engines.py --models tiny --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.protocol import InsertedIds
from anytime_reasoner.rollout.anytime import summary_requests
from anytime_reasoner.rollout.types import Thinking

VOCAB, PAD = 512, 0
INSERTED = InsertedIds(closed=(8, 9), forced=(5, 6, 7, 8, 9))  # cut marker + think-end + delimiter / delimiter


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    questions: int  # B
    thinkings: int  # G
    budgets: tuple[int, ...]  # S budgets, the last is the thinking length
    n_summary: int  # A
    summary_cap: int


SHAPES = {
    # the embedded model's shape with heads of 32 (hidden 96 = 4 × 24 → 4 × 32 after widening)
    "tiny": Shape("tiny (0.45M)", 128, 4, 4, 2, 256, 16, 8, (27, 54, 81, 108), 4, 12),
    "25m": Shape("25M", 512, 8, 8, 4, 1408, 8, 4, (64, 128, 192, 256), 4, 16),
}


def save_model(shape: Shape, path: Path) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def prompts(shape: Shape) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [
        torch.randint(10, VOCAB, (int(torch.randint(40, 77, (1,), generator=gen)),), generator=gen).tolist()
        for _ in range(shape.questions)
    ]


def thinkings_of(prompt_ids: list[list[int]], sampled: list, shape: Shape) -> list[list[Thinking]]:
    """The sampled thinkings as rollout ``Thinking``s, cut at every budget (none closed)."""
    rows = []
    for prompt, per in zip(prompt_ids, sampled, strict=True):
        rows.append(
            [
                Thinking(
                    prompt_ids=prompt,
                    thinking_ids=list(c.token_ids),
                    closed=False,
                    cuts=[min(b, len(c.token_ids)) for b in shape.budgets],
                )
                for c in per
            ]
        )
    return rows


def run_shape(shape: Shape, repeats: int, root: Path) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    from anytime_reasoner.engine.vllm import VLLMSettings, create_engine

    path = root / shape.name.split()[0]
    n_params = save_model(shape, path)
    prompt_ids = prompts(shape)
    think = SamplingParams(max_new_tokens=shape.budgets[-1], temperature=1.0, seed=0)
    summ = SamplingParams(max_new_tokens=shape.summary_cap, temperature=1.0, seed=1)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    hf = TransformersEngine(hf_model, pad_token_id=PAD, max_batch_rows=256)
    hf_plain = TransformersEngine(hf_model, pad_token_id=PAD, max_batch_rows=256, reuse_prefix=False)
    settings = VLLMSettings(enforce_eager=True, kv_cache_gib=1.0)
    vllm_on = create_engine(str(path), settings, device="cpu")
    vllm_off = create_engine(str(path), VLLMSettings(enforce_eager=True, kv_cache_gib=1.0, prefix_caching=False), device="cpu")

    out: dict[str, float] = {"params": float(n_params)}
    for name, engine, other in (("hf", hf, hf_plain), ("vllm", vllm_on, vllm_off)):
        fresh = getattr(engine, "llm", None) and engine.llm.reset_prefix_cache  # vLLM: forget earlier repeats
        think_times, summary_times, plain_times = [], [], []
        for _ in range(repeats):
            if fresh:
                fresh()
            t0 = time.perf_counter()
            sampled = engine.sample(prompt_ids, shape.thinkings, think)
            think_times.append(time.perf_counter() - t0)
            prefixes = [r.prefix for r in summary_requests(thinkings_of(prompt_ids, sampled, shape), shape.budgets, INSERTED)]
            t0 = time.perf_counter()  # vLLM: the thinkings' blocks are in the cache now, as in a rollout
            engine.sample(prefixes, shape.n_summary, summ)
            summary_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            other.sample(prefixes, shape.n_summary, summ)
            plain_times.append(time.perf_counter() - t0)
        t_think, t_summary = statistics.median(think_times), statistics.median(summary_times)
        out[f"{name}_think_s"] = t_think
        out[f"{name}_think_tok_s"] = shape.questions * shape.thinkings * shape.budgets[-1] / t_think
        out[f"{name}_summary_s"] = t_summary
        out[f"{name}_summary_plain_s"] = statistics.median(plain_times)
        out[f"{name}_summary_tok_s"] = len(prefixes) * shape.n_summary * shape.summary_cap / t_summary
    return out


def table(results: dict[str, dict[str, float]], shapes: dict[str, Shape]) -> str:
    lines = [
        "| model | engine | thinking tok/s | summary tok/s | summary: reuse vs none | vLLM ÷ transformers (thinking, summary) |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        s = shapes[key]
        for engine, label, reuse in (("hf", "transformers", "prefix reuse"), ("vllm", "vLLM", "prefix cache")):
            ratio = r[f"{engine}_summary_plain_s"] / r[f"{engine}_summary_s"]
            speed = ""
            if engine == "vllm":
                speed = f"{r['hf_think_s'] / r['vllm_think_s']:.2f}×, {r['hf_summary_s'] / r['vllm_summary_s']:.2f}×"
            lines.append(
                f"| {s.name}: B={s.questions} G={s.thinkings} b={s.budgets[-1]} S={len(s.budgets)} A={s.n_summary} | {label} | "
                f"{r[f'{engine}_think_tok_s']:,.0f} | {r[f'{engine}_summary_tok_s']:,.0f} | {reuse} {ratio:.2f}× faster | {speed} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,25m", help="comma list of: " + ", ".join(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # before vLLM binds the process's threads
    keys = [k for k in args.models.split(",") if k]
    with tempfile.TemporaryDirectory() as tmp:
        results = {k: run_shape(SHAPES[k], args.repeats, Path(tmp)) for k in keys}
    print(f"threads: {torch.get_num_threads()}, repeats: {args.repeats} (medians), float32, vLLM eager mode")
    print(table(results, SHAPES))


if __name__ == "__main__":
    main()
