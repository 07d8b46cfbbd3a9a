"""scripts/gpu_check.sh's program on a tiny shape on CPU: the same code path the GPU run takes
(packed vs unpacked log-probs, an FSDP2 step with bf16 compute in a one-process group)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.usefixtures("single_thread")
def test_gpu_check_runs_on_a_tiny_shape(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--shape", "tiny", "--device", "cpu", "--thinking", "48", "--check-thinking", "24", "--summary", "4", "--prompt", "8"]
    args += ["--vllm-prompts", "4", "--vllm-samples", "2", "--vllm-tokens", "32"]
    assert module.main([*args, "--steps", "1"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert float(lines["logprob_max_abs_diff"]) < 0.05  # bf16 autocast; exact in float32 (tests/train/test_packed_logprobs.py)
    # 3 rows of 8 + 48 + S·A·(8 inserted + 4 sampled) = 8 + 48 + 16·12 = 248 tokens
    assert float(lines["update_tokens"]) == 3 * 248
    assert float(lines["tokens_per_second"]) > 0
    if importlib.util.find_spec("vllm") is None:
        assert lines["vllm"].startswith("not checked")
    else:  # CI's vLLM environment: the engine on the same model, float32 on CPU
        assert float(lines["vllm_thinking_tokens"]) == 4 * 2 * 32  # no stop ids: every sample runs to the cap
        assert float(lines["vllm_logprob_max_abs_diff"]) < 1e-4
        assert float(lines["vllm_weight_sync_seconds"]) > 0
