"""Load on ``anytime-reasoner serve`` over real HTTP (127.0.0.1), against answering with ``ask``
one question after another (docs/BENCHMARKS.md, "Serving").

The server runs as its own process (``anytime-reasoner serve port=0``); the clients are one asyncio
process (httpx), each sending ``POST /v1/anytime`` (streamed) for held-out questions of the
embedded task, one after another. For each model and each concurrency level (1, 8, 32 clients) it
reports, over a bounded number of requests and seconds:

- requests/s and answer events/s;
- the overhead of an anytime answer: for each budget, the seconds from the thinking reaching it to
  its answer (server-side ``answered_s − reached_s``), p50 and p95, beside the time one summary
  takes on its own (a chat request whose thinking is cut at 1 token: prefill + summary, median);
- thinking tokens/s of one request with its summary forks (every budget) and without (one budget,
  the largest; the fork runs after the thinking ended), at 1 and 8 clients;
- the ratio of the 32-client throughput to ``ask`` (``eval.ask.iter_answers_at_budgets`` on the
  same kind of engine, in this process) answering the same questions sequentially.

Models: the embedded one (bootstrapped, cached: its thinkings close by themselves at ~40 tokens) and
a wider random one (hidden 512, 4 layers, the embedded tokenizer; its output head never picks
think-end or EOS, so every thinking runs to the largest budget).

    python benchmarks/bench_serve.py                      # both models, ~6 min on 2 cores
    python benchmarks/bench_serve.py --models embedded --requests 64 --seconds 60
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/bench_serve.py --backend vllm   # vLLM's CPU build
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

LEVELS = (1, 8, 32)


def wide_random_model(folder: Path, base: Path) -> Path:
    """Hidden 512, 4 layers, 8 heads, the embedded tokenizer; head rows of think-end and EOS zeroed
    and the rest scaled 50x, so thinkings and summaries run to their caps."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(base)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        head = model.get_output_embeddings().weight  # [V, H]
        head.mul_(50.0)
        for token in {tokenizer.convert_tokens_to_ids("</think>"), tokenizer.eos_token_id, tokenizer.pad_token_id}:
            head[token] = 0.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def start_server(model: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "anytime_reasoner", "serve", f"model={model}", "port=0", "device=cpu", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = ""
    while "serving" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("the server exited before listening")
    return proc, line.split(" on ", 1)[1].split()[0].rstrip("/")


async def one_request(client: httpx.AsyncClient, question: str, budgets: list[int]) -> dict:
    """One streamed anytime request: its answers, the time of its last thinking event, the total."""
    body = {"messages": [{"role": "user", "content": question}], "budgets": budgets}
    start = time.perf_counter()
    answers, thinking_end, done = [], start, {}
    async with client.stream("POST", "/v1/anytime", json=body) as resp:
        event = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "thinking":
                    thinking_end = time.perf_counter()
                elif event == "answer":
                    answers.append(data)
                elif event == "done":
                    done = data
    return {"answers": answers, "thinking_s": thinking_end - start, "total_s": time.perf_counter() - start,
            "thinking_tokens": done.get("thinking_tokens", 0)}  # fmt: skip


async def load(url: str, questions: list[str], budgets: list[int], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` concurrent clients sending requests until ``requests`` are done or ``seconds`` pass."""
    results: list[dict] = []
    counter = iter(range(requests))
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                results.append(await one_request(client, questions[i % len(questions)], budgets))

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        wall = time.perf_counter() - start
    overheads = [a["answered_s"] - a["reached_s"] for r in results for a in r["answers"]]
    return {
        "clients": clients,
        "requests": len(results),
        "seconds": wall,
        "requests_per_s": len(results) / wall,
        "answers_per_s": sum(len(r["answers"]) for r in results) / wall,
        "overhead_p50": statistics.median(overheads),
        "overhead_p95": statistics.quantiles(overheads, n=20)[-1] if len(overheads) > 1 else overheads[0],
        "thinking_tokens_per_s": statistics.median(r["thinking_tokens"] / max(r["thinking_s"], 1e-9) for r in results),
    }


async def summary_alone(url: str, question: str, cap: int, repeats: int = 8) -> float:
    """Median seconds of a chat request whose thinking is cut at 1 token: prefill + one summary."""
    body = {"messages": [{"role": "user", "content": question}], "thinking_token_budget": 1, "max_tokens": 1 + cap}
    times = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for _ in range(repeats):
            start = time.perf_counter()
            (await client.post("/v1/chat/completions", json=body)).raise_for_status()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def sequential_ask(model: Path, questions: list[str], budgets: list[int], summary_cap: int, backend: str) -> float:
    """Questions/s of ``ask`` (the same engine kind as the server's) answering one question after another."""
    from anytime_reasoner.config import EngineConfig
    from anytime_reasoner.eval.ask import AskOptions, iter_answers_at_budgets
    from anytime_reasoner.models.engines import load_for_inference
    from anytime_reasoner.protocol import AnytimeProtocol

    protocol = AnytimeProtocol(summary_max_tokens=summary_cap)
    engine = EngineConfig(backend=backend, enforce_eager=True, kv_cache_gib=0.5) if backend == "vllm" else EngineConfig()
    loaded = load_for_inference(str(model), None, "float32", "cpu", protocol, engine)
    options = AskOptions(protocol=protocol, eos_ids=loaded.codec.eos_ids, instruction="")
    start = time.perf_counter()
    for q in questions:
        list(iter_answers_at_budgets(loaded.engine, loaded.tokenizer, q, budgets, options))
    return len(questions) / (time.perf_counter() - start)


def bench_model(name: str, model: Path, budgets: list[int], summary_cap: int, args: argparse.Namespace) -> dict:
    from anytime_reasoner.tasks.synthetic import synthetic_held_out

    questions = [e.prompt[0][1] for e in synthetic_held_out(64)]
    engine = ("engine.backend=vllm", "engine.enforce_eager=true", "engine.kv_cache_gib=0.5") if args.backend == "vllm" else ()
    proc, url = start_server(model, f"summary_max_tokens={summary_cap}", *engine)
    try:
        asyncio.run(load(url, questions, budgets, 4, 8, 60))  # warm-up
        levels = [asyncio.run(load(url, questions, budgets, c, args.requests, args.seconds)) for c in LEVELS]
        alone = asyncio.run(summary_alone(url, questions[0], summary_cap))
        no_forks = [asyncio.run(load(url, questions, budgets[-1:], c, max(8, c), args.seconds)) for c in (1, 8)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ask_rate = sequential_ask(model, questions[: args.ask_questions], budgets, summary_cap, args.backend)
    return {"model": name, "backend": args.backend, "budgets": budgets, "levels": levels, "summary_alone_s": alone, "no_forks": no_forks,
            "ask_questions_per_s": ask_rate}  # fmt: skip


def report(result: dict) -> None:
    print(
        f"\n## {result['backend']} engine, {result['model']}: budgets {result['budgets'][0]}..{result['budgets'][-1]} ({len(result['budgets'])})"
    )
    print("| clients | requests | req/s | answers/s | overhead p50 (s) | overhead p95 (s) | thinking tok/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for lv in result["levels"]:
        print(f"| {lv['clients']} | {lv['requests']} | {lv['requests_per_s']:.2f} | {lv['answers_per_s']:.1f} | "
              f"{lv['overhead_p50']:.3f} | {lv['overhead_p95']:.3f} | {lv['thinking_tokens_per_s']:.0f} |")  # fmt: skip
    top = result["levels"][-1]
    print(f"- one summary on its own (chat, thinking cut at 1 token), median: {result['summary_alone_s']:.3f} s; "
          f"p95 overhead at 1 client: {result['levels'][0]['overhead_p95']:.3f} s")  # fmt: skip
    for lv, plain in zip(result["levels"][:2], result["no_forks"], strict=True):
        ratio = lv["thinking_tokens_per_s"] / plain["thinking_tokens_per_s"]
        print(f"- thinking tok/s at {lv['clients']} client(s): {lv['thinking_tokens_per_s']:.0f} with forks, "
              f"{plain['thinking_tokens_per_s']:.0f} without: {ratio:.2f}")  # fmt: skip
    ratio = top["requests_per_s"] / result["ask_questions_per_s"]
    print(f"- ask, sequential: {result['ask_questions_per_s']:.2f} questions/s; the server at {top['clients']} "
          f"clients: {top['requests_per_s']:.2f} req/s = {ratio:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,wide", help="embedded, wide, or both (comma list)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level at most")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per concurrency level at most")
    parser.add_argument("--ask-questions", type=int, default=16, help="questions answered by sequential ask")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="the server's engine (and ask's)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from anytime_reasoner.tasks.bootstrap import ensure_base_model

    base = ensure_base_model(progress=False)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "embedded":
                results.append(
                    bench_model("embedded (0.45M, thinkings close at ~40 tokens)", base, list(range(12, 61, 12)), 16, args)
                )
            elif name == "wide":
                wide = wide_random_model(Path(tmp) / "wide", base)
                results.append(bench_model("wide random (hidden 512, 4 layers; thinkings run to the cap)", wide,
                                           list(range(32, 257, 32)), 16, args))  # fmt: skip
    for result in results:
        report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
