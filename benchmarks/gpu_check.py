"""One-GPU check of the scale-out path on a randomly initialised model of the recipe's shape.

    bash scripts/gpu_check.sh                          # R1-Distill-Qwen-1.5B shape, CUDA, < 8 min
    python benchmarks/gpu_check.py --shape tiny --device cpu   # the same code path in seconds (CI)

Nothing is downloaded: the model is built from a ``Qwen2Config`` of the DeepSeek-R1-Distill-Qwen-1.5B
shape (hidden 1536, 28 layers, 12 heads / 2 KV heads, MLP 8960, vocabulary 151936, untied head).
It prints, as ``key: value`` lines:

1. packed vs unpacked log-probs on the same anytime rollouts (tree-packed rows with FlexAttention
   on CUDA, dense masks on CPU, against plain causal rows), max and mean absolute difference;
2. one FSDP2 training step (a one-process group, ``MixedPrecisionPolicy`` bf16 compute / fp32
   reduce, activation checkpointing, the trainer's ``ppo_update`` on packed rows of the recipe's
   length), update tokens/s (tokens run through the model per second of forward+backward+step)
   and MFU against the card's bf16 dense peak (``--peak-tflops``, default from the device name);
3. peak GPU memory of the step;
4. (run before the FSDP2 step) where vLLM is installed (``--vllm auto``), the vLLM engine on the same model: thinking tokens/s
   of a rollout (``--vllm-prompts`` × ``--vllm-samples`` to ``--vllm-tokens``), the seconds of a
   weight sync from the trained model (``train.weight_sync``, the trainer's path), sleep/wake on
   GPU, and the engine's log-probs against the trainer's on the sampled tokens (bf16 both).

A timed step is what the trainer does per mini-batch: the no-grad old-log-prob pass, then forward,
backward (recomputing each layer: activation checkpointing) and the optimizer step. That is three
forward passes and one backward (= two forwards), so MFU counts ``10 · P · tokens`` for the
matmul parameters P (all but the input embedding) plus the causal attention ``10 · layers · hidden
· Σ row_len²`` (QKᵀ and AV: 4·T²·h per layer and forward, halved by causality) — the work done,
not only the work "useful" to the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch
import torch.distributed as dist

from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.train.packing import pack_rollouts, unpack_rollouts

SHAPES = {
    # DeepSeek-R1-Distill-Qwen-1.5B (its config.json); the vocabulary is the padded embedding size
    "r1-1.5b": dict(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=131072,
        tie_word_embeddings=False,
    ),
    "tiny": dict(  # heads of 32: vLLM's CPU kernels take 32 and up
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}
MARKER, THINK_END, DELIMITER = [5, 6, 5, 6], 7, [8, 9, 10]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="r1-1.5b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--rows", type=int, default=3, help="packed rows per micro-batch (the recipe: 30720 // 10240)")
    p.add_argument("--thinking", type=int, default=8000, help="thinking tokens per row (the recipe's largest budget)")
    p.add_argument("--prompt", type=int, default=200)
    p.add_argument("--S", type=int, default=4, help="budgets per thinking")
    p.add_argument("--A", type=int, default=4, help="summaries per budget")
    p.add_argument("--summary", type=int, default=118, help="summary tokens (the recipe's cap)")
    p.add_argument("--check-thinking", type=int, default=1000, help="thinking tokens in the packed/unpacked check")
    p.add_argument("--steps", type=int, default=3, help="timed update steps (after one warm-up)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of the card (default: by name)")
    p.add_argument("--vllm", choices=["auto", "off"], default="auto", help="auto: check the vLLM engine if vllm imports")
    p.add_argument("--vllm-prompts", type=int, default=16)
    p.add_argument("--vllm-samples", type=int, default=8)
    p.add_argument("--vllm-tokens", type=int, default=1024)
    return p.parse_args(argv)


def random_rollouts(args: argparse.Namespace, thinking_len: int, n_rows: int, vocab: int, seed: int = 0) -> RolloutBatch:
    """``n_rows`` thinkings of ``thinking_len`` tokens (one question each), S cuts, A summaries per cut."""
    gen = torch.Generator().manual_seed(seed)
    budgets = tuple(round(j * thinking_len / args.S) for j in range(1, args.S + 1))

    def ids(n: int) -> list[int]:
        return torch.randint(16, vocab, (n,), generator=gen).tolist()

    def thinking() -> Thinking:
        summaries = [
            [Summary(MARKER + [THINK_END] + DELIMITER, ids(args.summary), "", 0.0) for _ in range(args.A)] for _ in budgets
        ]
        return Thinking(
            ids(args.prompt), ids(thinking_len), closed=False, cuts=list(budgets), summaries=summaries, finish_reason="length"
        )

    return RolloutBatch(budgets=budgets, thinkings=[[thinking()] for _ in range(n_rows)])


def build_model(args: argparse.Namespace, device: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**SHAPES[args.shape])
    config._attn_implementation = "flex_attention" if device.type == "cuda" else "sdpa"
    torch.manual_seed(0)
    with device:
        return Qwen2ForCausalLM(config).float()


def check_packed(model, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Log-probs of the trainable tokens, tree-packed vs plain rows (bf16 autocast)."""
    from anytime_reasoner.train.logprobs import packed_logprobs

    batch = random_rollouts(args, args.check_thinking, 1, model.config.vocab_size, seed=1)
    B, G, S, A = batch.shape
    zeros_t, zeros_s = torch.zeros(B, G, S), torch.ones(B, G, S, A)
    packed, unpacked = pack_rollouts(batch, zeros_t, zeros_s), unpack_rollouts(batch, zeros_t, zeros_s)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        a = packed_logprobs(model, packed.to(device))[packed.trainable_mask.to(device)]  # [M]
        b = torch.cat([packed_logprobs(model, unpacked.select([i]).to(device)).flatten() for i in range(unpacked.n_rows)])
        b = b[torch.cat([unpacked.select([i]).trainable_mask.flatten() for i in range(unpacked.n_rows)]).to(device)]
    if a.numel() != b.numel():
        raise SystemExit(f"packed rows score {a.numel()} tokens, unpacked rows {b.numel()}")
    diff = (a - b).abs()  # both list the trunk's tokens, then each summary's in (budget, sample) order
    return {
        "logprob_max_abs_diff": float(diff.max()),
        "logprob_mean_abs_diff": float(diff.mean()),
        "scored_tokens": float(a.numel()),
    }


def fsdp_step(model, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Timed FSDP2 update steps on ``--rows`` packed rows of the recipe's length."""
    from anytime_reasoner.config import PPOConfig
    from anytime_reasoner.train.fsdp import enable_activation_checkpointing, shard_policy
    from anytime_reasoner.train.logprobs import PolicyScorer
    from anytime_reasoner.train.runtime import Runtime
    from anytime_reasoner.train.update import build_optimizer, ppo_update

    runtime = Runtime(device=device, compute_dtype=torch.bfloat16, sharded=True)
    enable_activation_checkpointing(model)
    policy = shard_policy(PolicyScorer(model), runtime)
    cfg = PPOConfig(ppo_mini_batch_size=args.rows, ppo_max_token_len=10**9, lr=1e-6)
    optimizer = build_optimizer(policy, cfg)
    batch = random_rollouts(args, args.thinking, args.rows, model.config.vocab_size, seed=2)
    B, G, S, A = batch.shape
    gen = torch.Generator().manual_seed(3)
    packed = pack_rollouts(batch, torch.randn(B, G, S, generator=gen), torch.randn(B, G, S, A, generator=gen))
    attention = "flex" if device.type == "cuda" else "dense"
    policy.train()
    times = []
    for i in range(args.steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        metrics = ppo_update(policy, optimizer, packed, cfg, max_response_len=10176, attention=attention, runtime=runtime)
        _sync(device)
        if i:  # the first step compiles FlexAttention and warms the allocator
            times.append(time.perf_counter() - t0)
    tokens = float(packed.lengths.sum())
    c = model.config
    matmul_params = sum(p.numel() for p in model.parameters()) - c.vocab_size * c.hidden_size  # all but the input embedding
    attn_flops = 10 * c.num_hidden_layers * c.hidden_size * float((packed.lengths.float() ** 2).sum())
    flops = 10 * matmul_params * tokens + attn_flops  # 3 forwards (old log-probs, train, recompute) + 1 backward
    step = statistics.median(times)
    out = {
        "update_tokens": tokens,
        "step_seconds": step,
        "tokens_per_second": tokens / step,
        "achieved_tflops": flops / step / 1e12,
    }
    out["loss"], out["grad_norm"] = metrics["loss"], metrics["grad_norm"]
    return out


def vllm_check(model, args: argparse.Namespace, device: torch.device) -> tuple[object, dict[str, float]]:
    """The vLLM engine on ``model`` (saved in bf16): rollout speed, weight sync, log-prob agreement;
    the engine is returned to be closed at the end (closing it tears down the process group)."""
    import tempfile

    from anytime_reasoner.engine.base import SamplingParams
    from anytime_reasoner.engine.vllm import VLLMSettings, create_engine
    from anytime_reasoner.train.logprobs import PolicyScorer
    from anytime_reasoner.train.weight_sync import sync_engine

    cuda = device.type == "cuda"
    dtype = "bfloat16" if cuda else "float32"
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        settings = VLLMSettings(
            dtype=dtype, gpu_memory_utilization=0.3, kv_cache_gib=None if cuda else 0.5, enforce_eager=not cuda
        )
        engine = create_engine(folder, settings, device=device.type)
    gen = torch.Generator().manual_seed(4)
    prompts = [
        torch.randint(16, model.config.vocab_size, (args.prompt,), generator=gen).tolist() for _ in range(args.vllm_prompts)
    ]
    params = SamplingParams(max_new_tokens=args.vllm_tokens, temperature=1.0, seed=0, logprobs=True)
    _sync(device)
    t0 = time.perf_counter()
    out = engine.sample(prompts, args.vllm_samples, params)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for per in out for c in per)
    t0 = time.perf_counter()
    engine.sleep()  # GPU: KV cache freed, weights to host memory (a no-op on CPU)
    engine.wake_up()
    sleep_wake = time.perf_counter() - t0
    t0 = time.perf_counter()
    sync_engine(engine, PolicyScorer(model), getattr(torch, dtype))
    _sync(device)
    sync = time.perf_counter() - t0
    first = out[0][0]  # the engine's log-probs of one sample against the trainer's (teacher-forced)
    ids = torch.tensor([prompts[0] + list(first.token_ids)], device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=getattr(torch, dtype), enabled=cuda):
        logits = model(ids).logits[0, len(prompts[0]) - 1 : -1].float()
    trainer = torch.log_softmax(logits, -1).gather(1, torch.tensor(first.token_ids, device=device)[:, None]).squeeze(1)
    diff = (trainer.cpu() - torch.tensor(first.logprobs)).abs()
    return engine, {
        "vllm_thinking_tokens": float(tokens),
        "vllm_thinking_tokens_per_second": tokens / seconds,
        "vllm_sleep_wake_seconds": sleep_wake,
        "vllm_weight_sync_seconds": sync,
        "vllm_logprob_max_abs_diff": float(diff.max()),
        "vllm_logprob_mean_abs_diff": float(diff.mean()),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    if not dist.is_initialized():  # a one-process group: FSDP2 needs one, torchrun is not required
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}")
    print(f"torch: {torch.__version__}")
    t0 = time.perf_counter()
    model = build_model(args, device)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    for key, value in check_packed(model, args, device).items():
        print(f"{key}: {value:.6g}")
    engine = None
    if args.vllm == "auto" and importlib.util.find_spec("vllm") is not None:  # before FSDP2 shards the model
        engine, figures = vllm_check(model, args, device)
        for key, value in figures.items():
            print(f"{key}: {value:.6g}")
    else:
        print("vllm: not checked (not installed, or --vllm off)")
    for key, value in fsdp_step(model, args, device).items():
        print(f"{key}: {value:.6g}")
        if key == "achieved_tflops":
            peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
            if peak:
                print(f"peak_tflops: {peak:g}")
                print(f"mfu: {value / peak:.4f}")
    if device.type == "cuda":
        print(f"peak_memory_gib: {torch.cuda.max_memory_allocated(device) / 2**30:.2f}")
    print(f"wall_seconds: {time.perf_counter() - t0:.1f}")
    if engine is not None:
        engine.close()  # vLLM's own cleanup destroys the process group it shares
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
