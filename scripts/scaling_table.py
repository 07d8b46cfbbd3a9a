"""Back-of-envelope memory and step-time tables for training a recipe on 1…N GPUs.

    python scripts/scaling_table.py [--config YAML] [--gpus 1,2,8,16] [--shape 1.5b|7b] [--markdown]

Nothing here is measured: every figure is an estimate from the model shape and the training
config, under the assumptions below (also printed with the tables). Needs only the standard
library, PyYAML and the project's config loader (pydantic) — no torch, no download.

Assumptions
-----------
Model. A Qwen2 decoder (``SHAPES``): q/k/v projections with bias, o_proj and the SwiGLU MLP
without, two RMSNorms per layer, a final norm, untied input embedding and lm_head.

Memory per GPU (GiB = 2**30 bytes).
- Training state: fp32 master weights (4 B/param), fp32 gradients (4 B/param) and AdamW's two
  fp32 moments (8 B/param), all divided by N (FSDP2 shards every parameter, ZeRO-3 style).
- bf16 working copy: on N > 1 GPUs FSDP2 all-gathers one unit at a time; the largest unit is the
  root (input embedding + lm_head + final norm, which FSDP2 keeps unsharded between forward and
  backward), counted once in bf16 plus one prefetched decoder layer. On 1 GPU there is no FSDP:
  the one-process bf16 casts of every weight live through forward and backward (2 B/param).
- Activations of one micro-batch, bf16. Tokens = ``ppo.ppo_max_token_len`` (rows × longest row ≤
  that; the bound when rows are shorter than the longest possible one); longest row s =
  ``data.max_prompt_tokens`` + ``ppo.max_response_len`` (or, when that is unset, the derived
  bound of ``train.packing.max_response_len``: b_max + S·A·(inserted + summary cap)).
  * Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
    arXiv:2205.05198, eq. 2): per layer s·b·h·(34 + 5·a·s/h) bytes for a GPT block (4h GeLU MLP,
    multi-head attention, dropout). With flash/flex attention the 5·a·s²·b score term is dropped.
  * Qwen2 count used for the peak (same method, this block; bytes per token per layer):
    attention 8h + 4·kv_dim (q/k/v input, q, k, v, the kernel's output and o_proj's contiguous
    copy of it), SwiGLU MLP 2h + 8i (input, gate, silu(gate), up, product), two RMSNorms 12h
    (fp32 input + bf16 normalized each, as HF's Qwen2RMSNorm upcasts), no dropout:
    22h + 4·kv_dim + 8i (bf16 residual stream on 1 GPU and on N).
  * Full checkpointing (``model.activation_checkpointing``): the bf16 input of every layer
    (2·h bytes per token per layer) plus one layer's full activations during its recompute.
  * Log-prob head: log-probs are computed in chunks of 1024 tokens, so only a [1024, vocab] fp32
    logits tensor exists at once (its transients — the bf16 head output, logsumexp's temporary,
    its gradient — are not counted); the contrast row is full [tokens, vocab] fp32 logits.
- Rollout with the HF engine (``train.fsdp.unsharded``: every unit gathered once for the whole
  rollout): the full model in bf16 (2 B/param), the sharded training state still resident, the
  KV cache of the concurrent rows at their longest (2·layers·kv_heads·head_dim·2 bytes per
  token), and, summed on top (conservative), one layer's transient while a batch of
  ``decode_batch / A`` summary prefixes of the longest length is prefilled.
- Peak = the larger of the update phase (state + working copy + activations + log-prob chunk;
  shown with and without checkpointing) and the rollout phase. Allocator fragmentation, CUDA context
  (~0.5–1 GiB) and NCCL buffers are not counted.

Step time (upper bounds: every thinking runs to ``rollout.max_budget``, every prompt has
``data.max_prompt_tokens`` tokens, every summary has ``summary_max_tokens`` tokens).
- Questions are dealt strided over ranks; the busiest rank has ceil(batch_size / N) questions.
- Decode is memory-bandwidth bound: each decode step of a batch of concurrent rows reads the bf16
  weights once plus the KV cache of every row, at ``--decode-efficiency`` × ``--hbm-tbps``
  (roofline: the compute time 2·params·rows per step at ``--mfu`` × ``--peak-tflops`` is taken if
  larger). Concurrent rows = ``--decode-batch`` (default 64, the HF engine's ``max_batch_rows``),
  at most the rank's rows; HF ``generate`` runs a batch until its longest row stops, so a batch
  takes ``max_budget`` steps.
- Thinking: prompt prefill + ``max_budget`` decode steps. Summaries: each of the S cut prefixes
  (prompt + b_s + inserted) is prefilled once and shared by its A samples (prefix reuse), then
  ``summary_max_tokens`` decode steps with A·(prefixes of the batch) rows.
- Prefill and update are compute bound at ``--mfu`` × ``--peak-tflops``: forward FLOPs per token =
  2·params + 4·layers·hidden·context (attention; the mean visible context of a causal row / tree
  row). Update = fwd + bwd (3 forwards) × ``ppo.ppo_epochs``, + 1 forward for the old log-probs,
  + 1 forward recompute per epoch with checkpointing; i.e. 6·P·tokens + 2·P·tokens (+ 2·P·tokens)
  plus attention. Update tokens per step = batch_size × n packed rows of the full row length.
- Not counted: grading (CPU), communication time (the traffic row gives FSDP2's bytes), the
  weight handover between trainer and engine, validation and checkpoint steps.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "src" / "anytime_reasoner" / "configs" / "r1-distill-1.5b-deepscaler.yaml"
GiB = 2**30
LOGPROB_CHUNK = 1024  # train.logprobs: tokens per chunk through the output head
ENGINE_MAX_BATCH_ROWS = 64  # engine.hf.TransformersEngine.max_batch_rows


# ---------------------------------------------------------------------------------------------
# Model shape
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """A Qwen2 decoder: qkv bias, SwiGLU MLP, RMSNorm, optional tied embeddings."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v (with bias), o_proj (no bias)
        mlp = 3 * h * i  # gate, up, down
        norms = 2 * h  # input and post-attention RMSNorm
        return attention + mlp + norms

    @property
    def params(self) -> int:
        return self.embedding_params + self.layers * self.layer_params + self.hidden + self.head_params

    @property
    def root_unit_params(self) -> int:
        """What FSDP2's root unit holds when each decoder layer is its own unit."""
        return self.embedding_params + self.head_params + self.hidden

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_dim * 2  # K and V, every layer, bf16

    def activation_bytes_per_token_layer(self) -> int:
        """Qwen2 block, bf16, flash/flex attention, no dropout (see the module docstring)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return (8 * h + 4 * kv) + (2 * h + 8 * i) + 12 * h


# config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (Qwen2ForCausalLM): hidden_size 1536,
# num_hidden_layers 28, num_attention_heads 12, num_key_value_heads 2, intermediate_size 8960,
# vocab_size 151936, tie_word_embeddings false — as copied in derivatives' config.json on the Hub
# (e.g. huggingface.co/onnx-community/DeepSeek-R1-Distill-Qwen-1.5B-ONNX/blob/main/config.json,
# "_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"). Cross-check: the official
# model.safetensors is 3.55 GB = 2 bytes × 1,777,088,000 parameters.
# config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B: hidden_size 3584, num_hidden_layers 28,
# num_attention_heads 28, num_key_value_heads 4, intermediate_size 18944, vocab_size 152064,
# tie_word_embeddings false (e.g. huggingface.co/unsloth/DeepSeek-R1-Distill-Qwen-7B-bnb-4bit,
# "_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").
SHAPES = {
    "1.5b": ModelShape("DeepSeek-R1-Distill-Qwen-1.5B", 1536, 28, 12, 2, 8960, 151936),
    "7b": ModelShape("DeepSeek-R1-Distill-Qwen-7B", 3584, 28, 28, 4, 18944, 152064),
}


# ---------------------------------------------------------------------------------------------
# What the config says
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """The numbers of a training config that the estimate needs."""

    batch_size: int  # questions per RL step
    n: int  # thinkings per question (G)
    budgets: tuple[int, ...]  # S budgets
    n_summary: int  # A
    summary_cap: int
    inserted: int  # forced tokens before a summary (assumed)
    prompt: int  # data.max_prompt_tokens
    max_response_len: int  # ppo.max_response_len or the derived bound
    derived_response_len: int  # b_max + S·A·(inserted + cap)
    micro_tokens: int  # ppo.ppo_max_token_len
    mini_batch: int  # ppo.ppo_mini_batch_size (questions)
    epochs: int
    steps: int

    @property
    def max_budget(self) -> int:
        return self.budgets[-1]

    @property
    def row_len(self) -> int:
        """Longest packed row: prompt + response."""
        return self.prompt + self.max_response_len

    @property
    def block_len(self) -> int:
        return self.inserted + self.summary_cap


def packed_response_len_bound(max_budget: int, n_budgets: int, n_summary: int, inserted_len: int, summary_max_tokens: int) -> int:
    """``train.packing.packed_response_len_bound`` without torch: b_max + S·A·(inserted + cap)."""
    return max_budget + n_budgets * n_summary * (inserted_len + summary_max_tokens)


def load_recipe(config: Path, preset: str | None, inserted: int) -> Recipe:
    """Read a training config with the project's loader (pydantic + PyYAML only)."""
    src = str(REPO / "src")
    if src not in sys.path:
        sys.path.insert(0, src)  # also works without the editable install
    from anytime_reasoner.config import ConfigError, TrainConfig, build_config

    try:
        cfg = build_config(TrainConfig, preset=preset, files=[config])
    except ConfigError as err:
        raise SystemExit(f"scaling_table: {err}") from None
    plan = cfg.rollout.plan()
    cap = cfg.protocol().summary_max_tokens
    derived = packed_response_len_bound(plan.max_budget, len(plan.budgets), cfg.rollout.n_summary, inserted, cap)
    return Recipe(
        batch_size=cfg.trainer.batch_size,
        n=cfg.rollout.n,
        budgets=tuple(plan.budgets),
        n_summary=cfg.rollout.n_summary,
        summary_cap=cap,
        inserted=inserted,
        prompt=cfg.data.max_prompt_tokens,
        max_response_len=cfg.ppo.max_response_len or derived,
        derived_response_len=derived,
        micro_tokens=cfg.ppo.ppo_max_token_len,
        mini_batch=cfg.ppo.ppo_mini_batch_size,
        epochs=cfg.ppo.ppo_epochs,
        steps=cfg.trainer.steps,
    )


@dataclass(frozen=True)
class Hardware:
    gpu_memory_gib: float
    peak_tflops: float
    hbm_tbps: float
    mfu: float
    decode_efficiency: float
    decode_batch: int

    @property
    def flops(self) -> float:
        """Sustained FLOP/s assumed for compute-bound work."""
        return self.peak_tflops * 1e12 * self.mfu

    @property
    def bandwidth(self) -> float:
        """Sustained bytes/s assumed for decode."""
        return self.hbm_tbps * 1e12 * self.decode_efficiency


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def state_bytes(shape: ModelShape, world: int) -> dict[str, float]:
    """fp32 master weights, fp32 grads and AdamW moments per GPU (sharded over ``world``)."""
    p = shape.params
    return {"params": 4 * p / world, "grads": 4 * p / world, "optimizer": 8 * p / world}


def working_copy_bytes(shape: ModelShape, world: int) -> float:
    """bf16 weights materialized for compute: the one-process casts (1 GPU) or FSDP2's all-gather."""
    if world == 1:
        return 2 * shape.params
    return 2 * (shape.root_unit_params + shape.layer_params)


def korthikanti_bytes(shape: ModelShape, tokens: int, seq: int, flash: bool) -> float:
    """Korthikanti et al. 2022 eq. 2 summed over layers: s·b·h·(34 + 5·a·s/h), tokens = s·b."""
    per_layer = 34 * tokens * shape.hidden + (0 if flash else 5 * shape.heads * tokens * seq)
    return shape.layers * per_layer


def activation_bytes(shape: ModelShape, tokens: int, seq: int, checkpointing: bool, flash: bool = True) -> float:
    """Qwen2 count of one micro-batch's saved activations (bf16), plus the final norm."""
    per_layer = shape.activation_bytes_per_token_layer() * tokens + (0 if flash else 5 * shape.heads * tokens * seq)
    final_norm = 6 * shape.hidden * tokens
    if checkpointing:
        return shape.layers * 2 * shape.hidden * tokens + per_layer + final_norm
    return shape.layers * per_layer + final_norm


def logits_bytes(shape: ModelShape, tokens: int) -> float:
    """fp32 logits of ``tokens`` rows."""
    return 4 * tokens * shape.vocab


def rank_questions(recipe: Recipe, world: int) -> int:
    """Questions of the busiest rank (question q goes to rank q % world)."""
    return math.ceil(recipe.batch_size / world)


def concurrent_rows(recipe: Recipe, hw: Hardware, world: int) -> int:
    return max(1, min(hw.decode_batch, rank_questions(recipe, world) * recipe.n))


def rollout_bytes(shape: ModelShape, recipe: Recipe, hw: Hardware, world: int) -> dict[str, float]:
    """Rollout phase: resident training state + unsharded bf16 model + KV cache of the concurrent
    rows + the transient of one layer while prefilling a batch of summary prefixes (rough: 3
    intermediate-wide and 3 hidden-wide bf16 tensors plus k/v per token)."""
    rows = concurrent_rows(recipe, hw, world)
    longest = recipe.prompt + recipe.max_budget + recipe.block_len
    prefixes = min(max(1, hw.decode_batch // recipe.n_summary), rank_questions(recipe, world) * recipe.n * len(recipe.budgets))
    prefill_tokens = prefixes * (recipe.prompt + recipe.max_budget + recipe.inserted)
    return {
        "model": 2 * shape.params,
        "kv": rows * longest * shape.kv_bytes_per_token,
        "prefill": 2 * prefill_tokens * (3 * shape.intermediate + 3 * shape.hidden + 2 * shape.kv_dim),
        "state": sum(state_bytes(shape, world).values()),
    }


@dataclass(frozen=True)
class MemoryRow:
    world: int
    params: float
    grads: float
    optimizer: float
    working: float
    act_korthikanti: float
    act_eager: float
    act_full: float
    act_ckpt: float
    logits_chunk: float
    logits_full: float
    rollout_model: float
    rollout_kv: float
    rollout_prefill: float
    rollout_peak: float

    def update_peak(self, checkpointing: bool) -> float:
        """Update phase: training state + bf16 working copy + activations + log-prob chunk."""
        act = self.act_ckpt if checkpointing else self.act_full
        return self.params + self.grads + self.optimizer + self.working + act + self.logits_chunk

    def peak(self, checkpointing: bool) -> float:
        return max(self.update_peak(checkpointing), self.rollout_peak)


def memory_row(shape: ModelShape, recipe: Recipe, hw: Hardware, world: int) -> MemoryRow:
    tokens, seq = recipe.micro_tokens, recipe.row_len
    state = state_bytes(shape, world)
    rollout = rollout_bytes(shape, recipe, hw, world)
    return MemoryRow(
        world=world,
        params=state["params"],
        grads=state["grads"],
        optimizer=state["optimizer"],
        working=working_copy_bytes(shape, world),
        act_korthikanti=korthikanti_bytes(shape, tokens, seq, flash=True),
        act_eager=activation_bytes(shape, tokens, seq, checkpointing=False, flash=False),
        act_full=activation_bytes(shape, tokens, seq, checkpointing=False),
        act_ckpt=activation_bytes(shape, tokens, seq, checkpointing=True),
        logits_chunk=logits_bytes(shape, LOGPROB_CHUNK),
        logits_full=logits_bytes(shape, tokens),
        rollout_model=rollout["model"],
        rollout_kv=rollout["kv"],
        rollout_prefill=rollout["prefill"],
        rollout_peak=sum(rollout.values()),
    )


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------


def forward_flops(shape: ModelShape, tokens: float, mean_context: float) -> float:
    """Forward FLOPs: 2·params per token + attention 4·layers·hidden·context per token."""
    return tokens * (2 * shape.params + 4 * shape.layers * shape.hidden * mean_context)


def decode_seconds(shape: ModelShape, hw: Hardware, rows: int, steps: int, start_context: float) -> float:
    """One batch of ``rows`` decoding ``steps`` tokens from ``start_context``: roofline of weight +
    KV reads (bandwidth) and 2·params·rows per step (compute)."""
    mean_context = start_context + steps / 2
    read = steps * (2 * shape.params + rows * mean_context * shape.kv_bytes_per_token)
    compute = forward_flops(shape, rows * steps, mean_context)
    return max(read / hw.bandwidth, compute / hw.flops)


def prefill_seconds(shape: ModelShape, hw: Hardware, sequences: float, length: int) -> float:
    """Compute-bound prefill of ``sequences`` causal prefixes of ``length`` tokens."""
    return forward_flops(shape, sequences * length, length / 2) / hw.flops


def packed_row_mean_context(recipe: Recipe) -> float:
    """Mean visible context of a token of a full packed row (causal trunk + S·A summary blocks)."""
    trunk = recipe.prompt + recipe.max_budget
    total = trunk * trunk / 2  # causal trunk: token t sees t keys
    for b in recipe.budgets:
        total += recipe.n_summary * recipe.block_len * (recipe.prompt + b + recipe.block_len / 2)
    return total / (trunk + len(recipe.budgets) * recipe.n_summary * recipe.block_len)


@dataclass(frozen=True)
class TimeRow:
    world: int
    questions: int
    thinkings: int
    thinking: float
    summary_prefill: float
    summary_decode: float
    update_tokens: int
    update_ckpt: float  # with activation checkpointing (one recompute forward per epoch)
    update_plain: float  # without
    traffic: float  # FSDP2 collective bytes per GPU per step
    steps: int

    @property
    def rollout(self) -> float:
        return self.thinking + self.summary_prefill + self.summary_decode

    def update(self, checkpointing: bool) -> float:
        return self.update_ckpt if checkpointing else self.update_plain

    def step(self, checkpointing: bool) -> float:
        return self.rollout + self.update(checkpointing)

    def total_hours(self, checkpointing: bool) -> float:
        return self.step(checkpointing) * self.steps / 3600


def micro_batches(recipe: Recipe, world: int) -> int:
    """Micro-batches of the busiest rank per epoch (full-length rows; mini-batches of questions)."""
    rows_per_micro = max(1, recipe.micro_tokens // recipe.row_len)
    minis = math.ceil(recipe.batch_size / recipe.mini_batch)
    rows_per_mini = math.ceil(min(recipe.mini_batch, recipe.batch_size) / world) * recipe.n
    return minis * math.ceil(rows_per_mini / rows_per_micro)


def fsdp_traffic_bytes(shape: ModelShape, recipe: Recipe, world: int) -> float:
    """Per GPU: all-gather bf16 weights for every forward (old log-probs, train forward, backward
    re-gather, which a checkpointed recompute reuses) and reduce-scatter fp32 grads per micro-batch;
    ring factor (N-1)/N."""
    if world == 1:
        return 0.0
    per_micro_train = 2 * shape.params * 2 + 4 * shape.params  # fwd gather, bwd gather, fp32 reduce-scatter
    per_micro_old = 2 * shape.params
    n_micro = micro_batches(recipe, world)
    total = n_micro * (per_micro_old + recipe.epochs * per_micro_train)
    return total * (world - 1) / world


def time_row(shape: ModelShape, recipe: Recipe, hw: Hardware, world: int) -> TimeRow:
    questions = rank_questions(recipe, world)
    thinkings = questions * recipe.n
    rows = concurrent_rows(recipe, hw, world)

    # thinking: prompts prefilled once (shared by their G rows), then max_budget decode steps per batch
    batches = math.ceil(thinkings / rows)
    thinking = prefill_seconds(shape, hw, questions, recipe.prompt)
    thinking += batches * decode_seconds(shape, hw, rows, recipe.max_budget, recipe.prompt)

    # summaries: S prefixes per thinking, each prefilled once, A rows each
    summary_prefill = summary_decode = 0.0
    summary_rows = min(hw.decode_batch, thinkings * recipe.n_summary)
    for b in recipe.budgets:
        prefix = recipe.prompt + b + recipe.inserted
        summary_prefill += prefill_seconds(shape, hw, thinkings, prefix)
        batches = math.ceil(thinkings * recipe.n_summary / summary_rows)
        summary_decode += batches * decode_seconds(shape, hw, summary_rows, recipe.summary_cap, prefix)

    # update: full-length packed rows; fwd+bwd (3 forwards) per epoch, one old-log-prob forward,
    # and one recompute forward per epoch with checkpointing
    update_tokens = thinkings * recipe.row_len
    per_forward = forward_flops(shape, update_tokens, packed_row_mean_context(recipe)) / hw.flops
    plain = (3 * recipe.epochs + 1) * per_forward

    return TimeRow(
        world=world,
        questions=questions,
        thinkings=thinkings,
        thinking=thinking,
        summary_prefill=summary_prefill,
        summary_decode=summary_decode,
        update_tokens=update_tokens,
        update_ckpt=plain + recipe.epochs * per_forward,
        update_plain=plain,
        traffic=fsdp_traffic_bytes(shape, recipe, world),
        steps=recipe.steps,
    )


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def gib(x: float) -> str:
    return f"{x / GiB:.2f}"


def render(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([title, fmt.format(*header), *(fmt.format(*r) for r in rows)])


def both(fn) -> str:
    """``on / off``: a value with and without activation checkpointing."""
    return f"{fn(True)} / {fn(False)}"


def memory_table(mem: list[MemoryRow], hw: Hardware, markdown: bool) -> str:
    limit = hw.gpu_memory_gib * GiB

    def fits(m: MemoryRow) -> str:
        return both(lambda ckpt: "yes" if m.peak(ckpt) <= limit else "no")

    rows = [
        ["fp32 master weights", *(gib(m.params) for m in mem)],
        ["fp32 gradients", *(gib(m.grads) for m in mem)],
        ["AdamW moments (2 × fp32)", *(gib(m.optimizer) for m in mem)],
        ["bf16 working copy (1 GPU: casts of every weight; N: FSDP2 root unit + 1 layer)", *(gib(m.working) for m in mem)],
        ["activations, no checkpointing, flex (Korthikanti 34·sbh)", *(gib(m.act_korthikanti) for m in mem)],
        ["activations, no checkpointing, flex (Qwen2 count)", *(gib(m.act_full) for m in mem)],
        ["activations, no checkpointing, eager scores (+5·a·s²·b)", *(gib(m.act_eager) for m in mem)],
        ["activations, full checkpointing", *(gib(m.act_ckpt) for m in mem)],
        [f"log-prob head: [{LOGPROB_CHUNK}, vocab] fp32 chunk", *(gib(m.logits_chunk) for m in mem)],
        ["(contrast) full [tokens, vocab] fp32 logits", *(gib(m.logits_full) for m in mem)],
        ["update peak, checkpointing on / off", *(both(lambda c, m=m: gib(m.update_peak(c))) for m in mem)],
        ["rollout (HF engine, unsharded bf16): model", *(gib(m.rollout_model) for m in mem)],
        ["rollout (HF engine, unsharded bf16): KV cache", *(gib(m.rollout_kv) for m in mem)],
        ["rollout (HF engine, unsharded bf16): summary prefill transient", *(gib(m.rollout_prefill) for m in mem)],
        ["rollout (HF engine, unsharded bf16): with training state", *(gib(m.rollout_peak) for m in mem)],
        ["peak estimate, checkpointing on / off", *(both(lambda c, m=m: gib(m.peak(c))) for m in mem)],
        [f"fits in {hw.gpu_memory_gib:g} GiB, checkpointing on / off", *(fits(m) for m in mem)],
    ]
    return render("Memory per GPU (GiB)", ["", *(f"{m.world} GPU" for m in mem)], rows, markdown)


def time_table(times: list[TimeRow], markdown: bool) -> str:
    def sec(x: float) -> str:
        return f"{x:,.0f}"

    rows = [
        ["questions / thinkings on the busiest rank", *(f"{t.questions} / {t.thinkings}" for t in times)],
        ["rollout: thinking (prefill + decode)", *(sec(t.thinking) for t in times)],
        ["rollout: summary prefixes prefill", *(sec(t.summary_prefill) for t in times)],
        ["rollout: summary decode", *(sec(t.summary_decode) for t in times)],
        ["rollout total", *(sec(t.rollout) for t in times)],
        ["update tokens per rank (M)", *(f"{t.update_tokens / 1e6:.2f}" for t in times)],
        ["update, checkpointing on / off", *(both(lambda c, t=t: sec(t.update(c))) for t in times)],
        ["step, checkpointing on / off", *(both(lambda c, t=t: sec(t.step(c))) for t in times)],
        ["rollout share of the step (checkpointing on)", *(f"{100 * t.rollout / t.step(True):.0f}%" for t in times)],
        [f"{times[0].steps} steps, h, checkpointing on / off", *(both(lambda c, t=t: f"{t.total_hours(c):,.1f}") for t in times)],
        ["FSDP2 collective traffic per GPU per step (GB)", *(f"{t.traffic / 1e9:,.0f}" for t in times)],
    ]
    return render(
        "Time per RL step (seconds unless stated; upper bounds)", ["", *(f"{t.world} GPU" for t in times)], rows, markdown
    )


def assumptions(shape: ModelShape, recipe: Recipe, hw: Hardware, config: Path, markdown: bool) -> str:
    shown = config.resolve().relative_to(REPO) if config.resolve().is_relative_to(REPO) else config
    items = [
        f"model: {shape.name} shape: hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads "
        f"({shape.kv_heads} KV), intermediate {shape.intermediate}, vocab {shape.vocab}, "
        f"{'tied' if shape.tied_embeddings else 'untied'} embeddings: {shape.params:,} parameters",
        f"config: {shown}; step: {recipe.batch_size} questions × {recipe.n} thinkings, budgets {list(recipe.budgets)}, "
        f"A = {recipe.n_summary} summaries of ≤ {recipe.summary_cap} tokens, prompts ≤ {recipe.prompt} tokens, "
        f"{recipe.steps} steps",
        f"packed row ≤ {recipe.prompt} + {recipe.max_response_len} = {recipe.row_len} tokens "
        f"(derived bound b_max + S·A·(inserted + cap) = {recipe.derived_response_len} with {recipe.inserted} "
        f"inserted tokens assumed); micro-batch ≤ {recipe.micro_tokens} tokens",
        f"KV cache {shape.kv_bytes_per_token:,} bytes/token; decode {hw.decode_batch} concurrent rows per rank "
        f"(fewer if the rank has fewer) at {hw.decode_efficiency:g} × {hw.hbm_tbps:g} TB/s",
        f"compute: {hw.mfu:g} MFU × {hw.peak_tflops:g} TFLOP/s bf16 per GPU; GPU memory {hw.gpu_memory_gib:g} GiB",
        "a cell 'x / y' is with / without activation checkpointing (model.activation_checkpointing)",
    ]
    if markdown:
        return "\n".join(f"- {item}" for item in items)
    return "\n".join(f"  {item}" for item in items)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config YAML (default: the shipped recipe)")
    p.add_argument("--preset", default="ar-uniform", help="training preset applied under the config (default ar-uniform)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="1.5b", help="model shape (default 1.5b)")
    p.add_argument("--gpus", default="1,2,8,16", help="world sizes, comma-separated")
    p.add_argument("--gpu-memory-gib", type=float, default=80.0)
    p.add_argument("--peak-tflops", type=float, default=312.0, help="peak dense bf16 TFLOP/s per GPU (A100: 312)")
    p.add_argument("--hbm-tbps", type=float, default=2.0, help="HBM bandwidth per GPU, TB/s (A100 80GB: ~2.0)")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilization of prefill and update")
    p.add_argument("--decode-efficiency", type=float, default=0.5, help="fraction of HBM bandwidth batched decode reaches")
    p.add_argument("--decode-batch", type=int, default=ENGINE_MAX_BATCH_ROWS, help="concurrent decode rows per rank")
    p.add_argument("--inserted-tokens", type=int, default=3, help="forced tokens before each summary (tokenizer-dependent)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = p.parse_args(argv)
    try:
        args.gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    except ValueError:
        p.error(f"--gpus: comma-separated integers expected, got {args.gpus!r}")
    if not args.gpus or min(args.gpus) < 1:
        p.error("--gpus: world sizes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = SHAPES[args.shape]
    recipe = load_recipe(args.config, args.preset, args.inserted_tokens)
    hw = Hardware(args.gpu_memory_gib, args.peak_tflops, args.hbm_tbps, args.mfu, args.decode_efficiency, args.decode_batch)
    mem = [memory_row(shape, recipe, hw, n) for n in args.gpus]
    times = [time_row(shape, recipe, hw, n) for n in args.gpus]
    heading = "**Assumptions**\n" if args.markdown else "Assumptions:"
    blocks = [heading + "\n" + assumptions(shape, recipe, hw, args.config, args.markdown)]
    blocks += [memory_table(mem, hw, args.markdown), time_table(times, args.markdown)]
    print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
