"""Bootstrap of the tiny base model: training rows, a few SFT steps, caching, reload."""

import hashlib
import itertools
import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anytime_reasoner.data.prompts import render_prompt
from anytime_reasoner.tasks import bootstrap as boot
from anytime_reasoner.tasks import synthetic
from anytime_reasoner.tasks.bootstrap import (
    BootstrapSpec,
    Segments,
    SFTSpec,
    encode_example,
    ensure_base_model,
    examples,
    prompt_ids,
    prompt_messages,
)
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


@pytest.fixture(scope="module")
def default_tokenizer():
    """The tokenizer of the default base model (the cached one experiments run on)."""
    return build_tokenizer(TokenizerSpec())


def _decode_trained(tokenizer, example):
    return tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=False) if m])


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


# ---- SFT rows must stay byte-identical: the cached base model is keyed by settings, not by code ----


def _old_prompt_ids(tokenizer, question):
    """The prompt rule bootstrap used before it went through ``data.prompts`` (kept only here)."""
    messages = [{"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _old_encode_example(problem, tokenizer, segments, rng, sft):
    """``encode_example`` as it was before (kept only here), returning (ids, mask)."""
    question = problem.question if rng.random() < sft.bare_question_fraction else problem.prompt
    prompt = _old_prompt_ids(tokenizer, question)
    solution = problem.solution(rng)
    thinking = tokenizer.encode(solution.thinking, add_special_tokens=False)
    if rng.random() < sft.cut_fraction:
        cut = rng.randrange(len(thinking))
        guess = problem.cut_summary(tokenizer.decode(thinking[:cut]), rng)
        head = thinking[:cut]
        inserted = segments.cut_marker + [segments.think_end] + segments.delimiter
        tail = tokenizer.encode(guess.summary, add_special_tokens=False) + [segments.eos]
    else:
        head = thinking + [segments.think_end] + segments.delimiter
        inserted = []
        tail = tokenizer.encode(solution.summary, add_special_tokens=False) + [segments.eos]
    ids = prompt + head + inserted + tail
    return ids, [0] * len(prompt) + [1] * len(head) + [0] * len(inserted) + [1] * len(tail)


# Token ids of a = 47, b = 12, c = 83 with the default tokenizer, written down from the old code.
BARE_PROMPT = [1, 332, 203, 69, 33, 24, 27, 203, 70, 33, 21, 22, 203, 71, 33, 28, 23, 203, 345, 324, 308, 287, 344,
               35, 2, 203, 1, 348, 203, 3, 203]  # fmt: skip
INSTRUCTION_IDS = [337, 325, 336, 300, 340, 300, 323, 343, 287, 321, 314, 338, 307, 281, 334]
SUFFIXED_PROMPT = BARE_PROMPT[:24] + INSTRUCTION_IDS + BARE_PROMPT[24:]
# sha256 of json([ids, mask]) of the first 300 rows of ``examples(default tokenizer, defaults, seed 0)``, old code.
FIRST_300_ROWS_SHA = "dbb8f8b18eb61025f7a72d0f3d76e2ec2b96df1d0c97fd22ea70ed6c8b147f91"


def test_prompts_go_through_the_prompt_rule_and_keep_their_tokens(default_tokenizer):
    tok = default_tokenizer
    problem = Problem(values=(47, 12, 83), spec=TaskSpec(slip_rate=0.0, recheck_rate=0.0))
    assert prompt_ids(tok, problem, bare=True) == BARE_PROMPT == _old_prompt_ids(tok, problem.question)
    assert prompt_ids(tok, problem, bare=False) == SUFFIXED_PROMPT == _old_prompt_ids(tok, problem.prompt)
    # The suffixed form is the data pipeline's row of the problem, rendered by data.prompts.
    assert prompt_messages(problem, bare=False) == [{"role": "user", "content": problem.prompt}]
    assert render_prompt(tok, prompt_messages(problem, bare=False)) == (
        f"<|im_start|>user\n{problem.question} {synthetic.INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    # Both encode_example branches (bare question + full row, suffixed question + cut row) hold them.
    segments = Segments.of(tok)
    bare = SFTSpec(bare_question_fraction=1.0, cut_fraction=0.0)
    suffixed = SFTSpec(bare_question_fraction=0.0, cut_fraction=1.0)
    bare_full = encode_example(problem, tok, segments, random.Random(0), bare)
    suffixed_cut = encode_example(problem, tok, segments, random.Random(0), suffixed)
    n = len(BARE_PROMPT)
    assert bare_full.input_ids[:n] == BARE_PROMPT and sum(bare_full.loss_mask[:n]) == 0
    assert suffixed_cut.input_ids[: len(SUFFIXED_PROMPT)] == SUFFIXED_PROMPT
    assert "...\n\n...\n\n</think>" in tok.decode(suffixed_cut.input_ids)


def test_sft_rows_are_byte_identical_to_the_old_recipe(default_tokenizer):
    tok, task, sft = default_tokenizer, TaskSpec(), SFTSpec()
    segments = Segments.of(tok)
    new_rng, old_rng = random.Random("sft-0"), random.Random("sft-0")
    for problem in itertools.islice(synthetic.train_stream(0, task), 300):
        new = encode_example(problem, tok, segments, new_rng, sft)
        assert (new.input_ids, new.loss_mask) == _old_encode_example(problem, tok, segments, old_rng, sft)
    digest = hashlib.sha256()
    for row in itertools.islice(examples(tok, task, sft, seed=0), 300):
        digest.update(json.dumps([row.input_ids, row.loss_mask]).encode())
    assert digest.hexdigest() == FIRST_300_ROWS_SHA
    assert boot.FORMAT_VERSION == 1 and BootstrapSpec().key(0) == "61957e4bdab3"  # the cached base model's folder


# ---- the shipped base model ----


def test_the_package_ships_the_default_recipes_base_model():
    """A recipe change gives another key: the package must then ship the weights rebuilt by
    ``anytime-reasoner bootstrap`` (or every fresh clone bootstraps again, for minutes)."""
    weights = boot.shipped_weights(BootstrapSpec(), seed=0)
    assert weights is not None, f"no shipped weights for tiny-{BootstrapSpec().key(0)}: run 'anytime-reasoner bootstrap'"
    info = json.loads(weights.with_suffix(".json").read_text())
    assert info["key"] == BootstrapSpec().key(0) and info["seed"] == 0
    assert boot.shipped_weights(BootstrapSpec(), seed=1) is None  # only seed 0 ships


def test_a_missing_cache_is_filled_from_the_shipped_weights_without_training(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setattr(boot, "bootstrap", lambda *a, **k: pytest.fail("trained although the weights ship"))
    path = ensure_base_model(tmp_path, seed=0, progress=False)
    assert path.name == f"tiny-{BootstrapSpec().key(0)}"
    info = json.loads((path / "bootstrap.json").read_text())
    shipped = load_file(str(boot.shipped_weights(BootstrapSpec(), 0)))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert info["source"] == "shipped" and info["parameters"] == sum(p.numel() for p in model.parameters())
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in shipped.items())
    assert torch.equal(model.lm_head.weight, shipped["model.embed_tokens.weight"])  # tied, as the recipe's model
    assert AutoTokenizer.from_pretrained(str(path)).get_vocab() == build_tokenizer(TokenizerSpec()).get_vocab()
    assert boot.compare_with_shipped(path, BootstrapSpec(), 0) is None  # what it wrote is what ships


def test_compare_with_shipped_names_how_many_tensors_differ_and_by_how_much(tmp_path):
    from safetensors.torch import load_file, save_file

    path = ensure_base_model(tmp_path, seed=0, progress=False)
    state = load_file(str(path / boot.WEIGHTS_FILE))
    state["model.norm.weight"][3] += 0.25  # one element of one tensor
    save_file(state, str(path / boot.WEIGHTS_FILE))
    assert boot.compare_with_shipped(path, BootstrapSpec(), 0) == f"1 of {len(state)} tensors differ, largest difference 0.25"
    with pytest.raises(FileNotFoundError, match="no shipped weights"):
        boot.compare_with_shipped(path, BootstrapSpec(), 1)


def test_the_cache_can_be_told_to_bootstrap_instead(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(boot, "bootstrap", lambda out, **k: called.append(out) or (out / "bootstrap.json").write_text("{}"))
    ensure_base_model(tmp_path, seed=0, progress=False, use_shipped=False)
    assert len(called) == 1


@pytest.mark.parametrize("nudge, check, status, line", [
    (0.0, True, 0, "identical to the shipped weights, bit for bit"),
    (0.5, True, 1, "differs from the shipped weights: 1 of 50 tensors differ, largest difference 0.5"),
    (0.5, False, 0, "differs from the shipped weights: 1 of 50 tensors differ, largest difference 0.5"),
])  # fmt: skip
def test_the_bootstrap_command_reports_how_its_rebuild_compares(tmp_path, monkeypatch, capsys, nudge, check, status, line):
    """``anytime-reasoner bootstrap``: the SFT is replaced by a copy of the shipped model (nudged by
    ``nudge`` in one element), so only the command's comparison and exit status are under test."""
    from safetensors.torch import load_file, save_file

    from anytime_reasoner.config import BootstrapConfig

    def rebuilt(out, seed, spec, progress):  # stands in for the 2,600 SFT steps
        folder = boot.unpack_shipped(out, boot.shipped_weights(spec, seed), spec, seed)
        state = load_file(str(folder / boot.WEIGHTS_FILE))
        state["model.layers.0.mlp.up_proj.weight"][0, 0] += nudge
        save_file(state, str(folder / boot.WEIGHTS_FILE))
        return folder

    monkeypatch.setattr(boot, "bootstrap", rebuilt)
    assert boot.run_bootstrap(BootstrapConfig(out=str(tmp_path / "b"), check=check, progress=False)) == status
    assert capsys.readouterr().out.splitlines()[-1] == line
