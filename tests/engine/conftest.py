"""Engine-test fixtures: a random Qwen2 with heads of 32 (vLLM's CPU kernels need >= 32), saved
to a folder that both transformers and vLLM load."""

from __future__ import annotations

import pytest

from tests.conftest import make_tiny_qwen2, make_tokenizer


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("engines") / "model"
    make_tiny_qwen2(seed=1, hidden=128, layers=2).save_pretrained(path)  # 4 heads of 32
    make_tokenizer().save_pretrained(path)
    return path
