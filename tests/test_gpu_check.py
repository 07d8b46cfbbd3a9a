"""``scripts/gpu_check.sh --device cpu``: the device check's every stage on the CPU (tiny shapes, tree
attention for training, vLLM's CPU build in CI's vLLM environment), so the script is known to work
before a GPU is at hand, and fails loudly (non-zero) when a check fails."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    script = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args]
    return subprocess.Popen(script, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(run: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = run.communicate(timeout=1200)
    finally:
        run.kill()
    return run.returncode, out


def _run(*args: str) -> tuple[int, str]:
    return _finish(_start(*args))


def _passed(out: str, stage: str) -> bool:
    return any(line.startswith(f"-- {stage}") and ": PASS" in line for line in out.splitlines())


@pytest.mark.slow
@pytest.mark.processes  # torchrun, vLLM and trainer processes
def test_every_stage_passes_on_the_cpu():
    """Every stage, as two runs at once (stages 1-3 and 4-5, ~100 s each on the 2-core CI machine,
    where one after the other they were the vLLM suite's longest test by far; no fixed port is
    shared between the two: stage 3's torchrun is the only one)."""
    first, second = _start("--device", "cpu", "--stages", "1,2,3"), _start("--device", "cpu", "--stages", "4,5")
    try:
        (code, out), (code_45, out_45) = _finish(first), _finish(second)
    finally:  # the second run too, when the first one times out
        second.kill()
    assert code == 0, out[-4000:]
    assert code_45 == 0, out_45[-4000:]
    for text in (out, out_45):
        assert "FAIL" not in text and "gpu_check: every stage passed" in text
    for stage in ("1. versions", "2a. model", "2b. train", "2c. the same command", "2d. the resume"):
        assert _passed(out, stage), stage
    if HAS_VLLM:  # CI's vLLM environment: the external launcher
        assert _passed(out, "3. torchrun")
    else:
        assert "3. torchrun + vLLM external_launcher: skipped (vLLM is not installed" in out
    figures = dict(line.split(": ", 1) for line in out_45.splitlines() if ": " in line and not line.startswith(("check ", "-- ")))
    for stage in ("2a. model", "4. the 1.5B-shape step", "5a. async_level=1", "5b. the lag"):
        assert _passed(out_45, stage), stage
    # the rollout worker's engine (vLLM's in CI's vLLM environment) in float32 holds the trainer's
    # weights at step 1 (measured max |Δ| 9.5e-7)
    for name in ("engine_logprob_per_trained_token", "same_weights_at_step_1"):
        assert f"check {name}: PASS" in out_45, name
    assert "check compiles_below_the_limit: PASS" in out_45 and int(figures["compiled_graphs_cpu_dynamo"]) <= 3
    # 2 rows of 16 prompt + 96 thinking + S·A·(8 inserted + 8 sampled) = 16 + 96 + 16·16 = 368 tokens each
    assert float(figures["update_tokens"]) == 2 * 368
    # one mini-batch in one process: no old-log-prob pass, so train + recompute forwards, 8·P·T FLOPs
    assert float(figures["forwards_per_step"]) == 2 and float(figures["flops_per_token_parameter"]) == 8
    assert float(figures["logprob_mean_abs_diff"]) < 0.05  # bf16 autocast; exact in float32 (tests/train)
    # a question's 3 trees in one row hold its prompt once: 2 copies of 16 tokens fewer, the same log-probs
    assert float(figures["shared_prompt_tokens_saved"]) == 2 * 16 and "check shared_prompts_equal_own_prompts: PASS" in out_45
    if HAS_VLLM:  # the engine following an update, in stage 4
        assert "check engine_follows_the_trainer: PASS" in out_45 and "check update_moves_the_logprobs: PASS" in out_45


def test_only_the_stages_asked_for_run():
    """``--stages 1``: the versions stage alone (a device session reruns what failed, not the rest);
    an unknown stage is refused in one line."""
    code, out = _run("--device", "cpu", "--stages", "1")
    assert code == 0, out[-2000:]
    assert "-- 1. versions and device: PASS" in out
    assert not any(line.startswith(("== 2", "== 3", "== 4", "== 5")) for line in out.splitlines()), out
    code, out = _run("--device", "cpu", "--stages", "2,7")
    assert code == 2
    assert out.strip() == "gpu_check: --stages: a comma-separated list of stage numbers 1-5, got '2,7'"


def test_a_failing_stage_fails_the_script(tmp_path):
    # a CUDA check on a machine without CUDA: stage 1 fails, and so does the script, loudly
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    code, out = _run("--device", "cuda", "--fail-fast")
    assert code != 0
    assert "check cuda_available: FAIL" in out and "gpu_check: 1 stage(s) failed: 1. versions" in out
    assert "== 2a." not in out  # --fail-fast: nothing after the first failure
