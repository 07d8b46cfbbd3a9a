"""Two processes (``torchrun``, gloo, FSDP2) train as one process does on the same global batch,
and resume exactly.

The 2-process runs go through ``tests/train/dist_worker.py``, which records what each rank's
update receives. The one-process reference rebuilds the global batch from those records (rank r
holds questions r, r + 2, …) and runs the update of a one-process trainer from the same base
model on it. Every run of this module goes into one ``torchrun`` launch (the ``launched`` fixture:
runs one after another, each in a process group of its own), so the ranks start once; only the
command users launch (``torchrun -m anytime_reasoner train``) has a launch of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anytime_reasoner.algo.advantages import summary_advantages, thinking_advantages
from anytime_reasoner.rollout.types import RolloutBatch
from anytime_reasoner.train.loggers import read_metrics
from tests.conftest import make_tiny_qwen2, make_tokenizer, once_per_run, processes_lock
from tests.train.test_trainer_smoke import _build, _config, _overrides

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.processes,
]  # launches torchrun with a tiny model

WORKER = Path(__file__).with_name("dist_worker.py")
WORLD = 2
# 3 questions on 2 ranks: rank 0 holds q0, q2 and rank 1 holds q1. With 2 questions per optimizer
# step, mini-batch 0 = {q0 | q1} and mini-batch 1 = {q2 | nothing}: rank 1 runs a stand-in forward.
SETTINGS = {"trainer.batch_size": 3, "ppo.ppo_mini_batch_size": 2, "trainer.val_every": 0}


# The parametrized test's cases: (loss_agg, questions, optimizer_steps, lora_rank, dtype).
CASES = {
    "constant": ("constant", 3, 2, 0, "float32"),  # ceil(3 questions / 2 per step)
    "token-mean": ("token-mean", 3, 2, 0, "float32"),
    "one-question": ("constant", 1, 1, 0, "float32"),  # rank 1 gets no question: it joins every collective with nothing to train
    "lora": ("constant", 3, 2, 4, "float32"),  # LoRA adapters sharded like any parameter, base weights frozen
    "bf16": ("constant", 3, 2, 0, "bfloat16"),  # bf16 compute: one process casts the weights as FSDP2 does
}


def _knobs(case: str) -> dict[str, object]:
    loss_agg, questions, _, lora_rank, dtype = CASES[case]
    return {
        "ppo.loss_agg": loss_agg,
        "trainer.batch_size": questions,
        "trainer.val_every": 1,
        "data.val_size": questions,
        "model.lora_rank": lora_rank,
        "model.dtype": dtype,
    }


def _plan(root: Path) -> list[dict[str, object]]:
    """Every 2-process run of the module, in the order they run."""
    runs = []
    for case in CASES:  # the 2-process runs also checkpoint activations: recomputation must not change the gradient
        knobs = {**SETTINGS, **_knobs(case), "model.activation_checkpointing": "true"}
        (root / "dump" / case).mkdir(parents=True)
        runs.append({"out": str(root / case), "steps": 1, "dump": str(root / "dump" / case), "overrides": knobs})
    # the resumed run's two parts with the uninterrupted run between them: the second part starts
    # in processes whose random state is the uninterrupted run's end, so only a real resume matches
    runs.append({"out": str(root / "resumed"), "steps": 1, "dump": None, "overrides": SETTINGS})
    runs.append({"out": str(root / "straight"), "steps": 2, "dump": None, "overrides": {**SETTINGS, "trainer.save_every": 1}})
    runs.append({"out": str(root / "resumed"), "steps": 2, "dump": None, "overrides": SETTINGS})
    runs.append({"out": str(root / "to-one-process"), "steps": 1, "dump": None, "overrides": SETTINGS})
    return runs


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The tiny model and tokenizer the 2-process runs and their one-process references start from
    (one folder for the test run: a run resumed in one process names it in its config)."""

    def save(path: Path) -> None:
        make_tiny_qwen2(seed=0).save_pretrained(path)
        make_tokenizer().save_pretrained(path)

    return once_per_run(tmp_path_factory, "distributed-base", save)


@pytest.fixture(scope="session")
def launched(model_dir, tmp_path_factory) -> Path:
    """One ``torchrun`` launch of 2 ranks running every run of :func:`_plan`, once per test run
    however xdist deals out the module's tests → the folder of their outputs."""

    def launch(root: Path) -> None:
        plan = root / "plan.json"
        plan.write_text(json.dumps({"model": str(model_dir), "runs": _plan(root)}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}", str(WORKER), str(plan)]
        with processes_lock(tmp_path_factory):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-4000:]

    return once_per_run(tmp_path_factory, "two-processes", launch)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32).state_dict()


def _plain_weights(model) -> dict[str, torch.Tensor]:
    """The model's weights as a plain transformers model holds them (LoRA merged in)."""
    from anytime_reasoner.train.lora import is_lora, merged_state_dict

    return merged_state_dict(model) if is_lora(model) else {k: v.clone() for k, v in model.state_dict().items()}


def _global_batch(dump: Path, step: int) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor]:
    """The ranks' records of ``step`` put back in global question order (q = r + 2j); a rank
    without questions records nothing."""
    files = [dump / f"step{step}_rank{r}.pt" for r in range(WORLD)]
    parts = [torch.load(f, weights_only=False) for f in files if f.is_file()]
    n = sum(len(p["rollouts"].thinkings) for p in parts)
    order = [(q % WORLD, q // WORLD) for q in range(n)]  # (rank, local index) of global question q
    rollouts = RolloutBatch(
        budgets=parts[0]["rollouts"].budgets,
        thinkings=[parts[r]["rollouts"].thinkings[j] for r, j in order],
        ground_truths=[parts[r]["rollouts"].ground_truths[j] for r, j in order],
    )
    think_adv = torch.stack([parts[r]["think_adv"][j] for r, j in order])  # [B, G, S]
    summ_adv = torch.stack([parts[r]["summ_adv"][j] for r, j in order])  # [B, G, S, A]
    return rollouts, think_adv, summ_adv


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_as_one_on_the_global_batch(model_dir, launched, tmp_path, case):
    _, questions, optimizer_steps, _, dtype = CASES[case]
    knobs = _knobs(case)
    dump = launched / "dump" / case
    rollouts, think_adv, summ_adv = _global_batch(dump, 1)
    assert len(rollouts.thinkings) == questions

    # group baselines are per question: advantages on the global batch equal the ranks' own
    reference = _build(_config(model_dir, tmp_path / "one", steps=1, **{**SETTINGS, **knobs}))
    scores = rollouts.scores()  # [3, G, S, A]
    probs = torch.tensor(reference.plan.probs)
    torch.testing.assert_close(thinking_advantages(scores, probs, "brpo"), think_adv, rtol=0, atol=0)
    torch.testing.assert_close(summary_advantages(scores, "brpo", rollouts.cut_lengths()), summ_adv, rtol=0, atol=0)

    before = _plain_weights(reference.model)
    metrics = reference.update(rollouts, think_adv, summ_adv)
    reference.verifier.close()
    assert metrics["optimizer_steps"] == optimizer_steps
    two = _final_weights(launched / case)  # merged under LoRA
    one = _plain_weights(reference.model)
    assert any(not torch.equal(one[k], before[k]) for k in one), "lr 1e-2 must move the weights"
    # what an engine on each rank receives: the full trained float32 weights (LoRA merged)
    streamed = [torch.load(dump / f"streamed_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r in range(WORLD):
        assert set(two) <= set(streamed[r])
        for k, v in two.items():  # the export is in the compute dtype: float32, or bf16 of the float32 masters
            torch.testing.assert_close(streamed[r][k].to(getattr(torch, dtype)).float(), v, rtol=0, atol=0, msg=k)
    if dtype == "float32":
        for k, v in one.items():
            torch.testing.assert_close(two[k], v, rtol=0, atol=1e-5, msg=k)
    else:
        _assert_bf16_steps_match(before, one, streamed[0])  # the float32 masters of both
    if Path("/proc/self/task").is_dir():  # Linux: the worker lists the gloo threads left after shutdown
        # one alive at interpreter exit can abort a run that succeeded (see runtime.shutdown)
        left = {r: (dump / f"threads_after_shutdown_rank{r}.txt").read_text() for r in range(WORLD)}
        assert left == {r: "" for r in range(WORLD)}
    logged = read_metrics(launched / case / "metrics.jsonl")[0]
    assert len(logged["val/accuracy"]) == len(reference.val_plan.budgets)  # validation gathered from both ranks
    close = {"rel": 1e-4, "abs": 1e-7} if dtype == "float32" else BF16_METRICS
    for key in ("loss", "tokens", "clip_frac", "grad_norm"):  # reduced over ranks = one process's
        assert logged[key] == pytest.approx(metrics[key], **close), key


# bf16: each rank's bf16 weight gradients are rounded to 8 mantissa bits before the float32 sum,
# where one process rounds the whole batch's once, so the two need not agree bit for bit; stated
# tolerances, with what this machine measured. One process casting the weights as FSDP2 does
# (Runtime.cast_dtype) measured equal updates (relative difference 0.0, equal loss and grad norm);
# the torch.autocast path it replaces (float32 weights, a float32 residual stream) measured cosine
# 0.99756 and relative 0.070, and fails.
BF16_METRICS = {"rel": 1e-3, "abs": 1e-7}  # loss, clip share and grad norm of the step
BF16_STEP_COSINE = 0.9999  # the 2-process weight update against the one-process one, as vectors
BF16_STEP_RELATIVE = 0.01  # |update_2 − update_1| / |update_1|


def _assert_bf16_steps_match(before, one, two):
    step_one = torch.cat([(one[k] - before[k]).flatten() for k in before])
    step_two = torch.cat([(two[k] - before[k]).flatten() for k in before])
    cosine = float(torch.nn.functional.cosine_similarity(step_one, step_two, dim=0))
    relative = float((step_two - step_one).norm() / step_one.norm())
    assert cosine > BF16_STEP_COSINE and relative < BF16_STEP_RELATIVE, (cosine, relative)


def test_the_train_command_under_torchrun_trains_and_exits_cleanly(model_dir, tmp_path):
    """``torchrun -m anytime_reasoner train``: the command users launch, with the real grader."""
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}"]
    cmd += ["-m", "anytime_reasoner", "train", "ar-uniform", *_overrides(model_dir, out, 1, **SETTINGS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"model saved to {out / 'final'}" in done.stdout  # rank 0 prints it
    assert (out / "final" / "config.json").is_file()


def test_two_process_resume_equals_an_uninterrupted_run(launched):
    """2 steps straight against 1 step, then the same run to step 2 (a second run resuming it)."""
    straight, resumed = _final_weights(launched / "straight"), _final_weights(launched / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    a, b = read_metrics(launched / "straight" / "metrics.jsonl"), read_metrics(launched / "resumed" / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2]
    assert a[1]["loss"] == b[1]["loss"] and a[1]["reward_per_budget"] == b[1]["reward_per_budget"]


def test_a_two_process_checkpoint_resumes_in_one_process(model_dir, launched):
    """DCP reshards on load: one process continues a 2-process run from its float32 weights."""
    from transformers import AutoModelForCausalLM

    out = launched / "to-one-process"  # this test's run alone: it goes on with it
    resumed = _build(_config(model_dir, out, steps=2, **SETTINGS))
    try:
        assert resumed.start_step == 1
        exported = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step_1").state_dict()
        for k, v in resumed.model.state_dict().items():
            torch.testing.assert_close(v, exported[k], rtol=0, atol=0, msg=k)  # float32 run: the export is exact
        resumed.fit()
    finally:
        resumed.verifier.close()
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2]
