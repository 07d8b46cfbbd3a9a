"""Bootstrap of the tiny base model: training rows, a few SFT steps, caching, reload."""

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anytime_reasoner.tasks import bootstrap as boot
from anytime_reasoner.tasks.bootstrap import BootstrapSpec, Segments, SFTSpec, encode_example, ensure_base_model
from anytime_reasoner.tasks.synthetic import Problem, TaskSpec
from anytime_reasoner.tasks.tiny_model import TinyModelSpec
from anytime_reasoner.tasks.tokenizer import TokenizerSpec, build_tokenizer

SMOKE = BootstrapSpec(
    model=TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64),
    tokenizer=TokenizerSpec(vocab_size=300, corpus_problems=30),
    sft=SFTSpec(steps=4, batch_size=4, warmup_steps=2),
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(SMOKE.tokenizer)


def _decode_trained(tokenizer, example):
    return tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask) if m])


def test_full_row_trains_on_the_whole_response(tokenizer):
    problem = Problem(values=(47, 12), spec=TaskSpec(slip_rate=0.0, recheck_rate=0.0))
    sft = SFTSpec(cut_fraction=0.0, bare_question_fraction=1.0)
    example = encode_example(problem, tokenizer, Segments.of(tokenizer), random.Random(0), sft)
    assert tokenizer.decode(example.input_ids) == (
        "<|im_start|>user\na=47\nb=12\nWhich value is the largest?<|im_end|>\n<|im_start|>assistant\n<think>\n"
        "a=47 best=47\nb=12 best=47\n</think>\n\n**Final Answer**\n\\boxed{47}<|im_end|>"
    )
    assert _decode_trained(tokenizer, example) == (
        "a=47 best=47\nb=12 best=47\n</think>\n\n**Final Answer**\n\\boxed{47}<|im_end|>"
    )


def test_cut_row_masks_the_inserted_text(tokenizer):
    problem = Problem(values=(47, 12), spec=TaskSpec(slip_rate=0.0, recheck_rate=0.0))
    sft = SFTSpec(cut_fraction=1.0, bare_question_fraction=1.0)
    example = encode_example(problem, tokenizer, Segments.of(tokenizer), random.Random(0), sft)
    text = tokenizer.decode(example.input_ids)
    assert text.count("...\n\n...\n\n</think>\n\n**Final Answer**\n\\boxed{") == 1
    trained = _decode_trained(tokenizer, example)
    assert "</think>" not in trained and "**Final Answer**" not in trained and "..." not in trained
    assert trained.endswith("}<|im_end|>")


def test_bootstrap_smoke_saves_reloads_and_caches(tmp_path, monkeypatch):
    path = ensure_base_model(tmp_path, seed=0, spec=SMOKE, progress=False)
    assert path.parent == tmp_path and path.name == f"tiny-{SMOKE.key(0)}"
    info = json.loads((path / "bootstrap.json").read_text())
    assert info["seed"] == 0 and info["spec"]["sft"]["steps"] == 4 and info["parameters"] > 0
    model = AutoModelForCausalLM.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tokenizer)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "a=1"}], add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode(ids)])).logits
    assert torch.isfinite(logits).all()
    # A second call finds the cache and does not train again; other settings get another folder.
    monkeypatch.setattr(boot, "bootstrap", lambda *a, **k: pytest.fail("bootstrapped twice"))
    assert ensure_base_model(tmp_path, seed=0, spec=SMOKE) == path
    assert SMOKE.key(1) != SMOKE.key(0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind
