"""Shared test fixtures: a tiny byte-level tokenizer and a tiny random Qwen2 model.

The tokenizer maps every byte to its own value as id (``"a"`` → 97, ``"\\n"`` → 10), so token
arithmetic in tests can be done by hand; special tokens follow from 256:
``<pad>`` 256, ``<eos>`` 257, ``<think>`` 258, ``</think>`` 259, ``<|user|>`` 260, ``<|assistant|>`` 261.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per xdist worker (and in the processes its tests start): the workers already
    # fill the cores, and intra-op threads beyond them spin-wait (tiny models gain nothing from them).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

PAD, EOS, THINK, THINK_END, USER, ASSISTANT = 256, 257, 258, 259, 260, 261
SPECIAL_TOKENS = ("<pad>", "<eos>", "<think>", "</think>", "<|user|>", "<|assistant|>")
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

# Ends at the assistant turn; the prompt helper must append "<think>\n" itself.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (the ByteLevel alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=False)}


def make_tokenizer(chat_template: str = CHAT_TEMPLATE):
    """A byte-level tokenizer (id of byte b is b) with the special tokens above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", padding_side="left")
    tok.chat_template = chat_template
    return tok


def make_tiny_qwen2(seed: int = 0, hidden: int = 32, layers: int = 2, vocab: int = VOCAB_SIZE):
    """A random Qwen2 causal LM built from a config (no download)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config).eval()


@contextlib.contextmanager
def processes_lock(tmp_path_factory, *, exclusive: bool = False) -> Iterator[None]:
    """Under ``-n``, hold the lock the xdist workers share for work that runs several processes
    (jobs, torchrun ranks, rollout workers, the grader's pool). ``exclusive``: no other such work
    at once (the grader's timed tests: more processes than cores made them fail in CI); otherwise
    shared with other shared holders, so two such tests may overlap (they wait on their processes
    a good part of the time, and no result of theirs depends on timing) but never with an exclusive
    one. Without ``-n``: nothing."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    lock = tmp_path_factory.getbasetemp().parent / "processes.lock"  # the run's folder, above every worker's
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def once_per_run(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test run, by whichever xdist worker asks first; a worker that asks
    meanwhile waits for it, and every one gets the same folder (a session fixture alone runs once
    per *worker*: its work twice when a module's tests are dealt to both). Without ``-n``: once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above every worker's
    folder = root / name
    with (root / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(autouse=True)
def _processes_lock(request, tmp_path_factory):
    """Tests marked ``processes`` run under :func:`processes_lock`, exclusively when marked
    ``processes(exclusive=True)``. A fixture of wider scope that starts processes itself takes the
    lock in its own setup (it is set up before this one)."""
    marker = request.node.get_closest_marker("processes")
    if marker is None:
        yield
        return
    with processes_lock(tmp_path_factory, exclusive=marker.kwargs.get("exclusive", False)):
        yield


def pytest_collection_modifyitems(config, items):
    """The ``processes`` tests first, then the quick ones, then the other slow (end-to-end) ones,
    each in their files' order. Under ``-n`` the scheduler is ``worksteal`` (``addopts`` in
    pyproject.toml): each worker starts with half of this list, and a worker left with (almost)
    nothing takes half of the other's queue, from its end. On two cores the first worker starts on
    the ``processes`` tests, the second on the other slow ones, the quick ones fill in on both, and
    a worker that has stolen ``processes`` tests runs them beside the other's (the lock is shared
    but for the exclusive ones)."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("processes") else 2 if item.get_closest_marker("slow") else 1)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_qwen2()


@pytest.fixture
def single_thread():
    """Run a test on one torch thread, restoring the count afterwards: tiny models gain nothing
    from intra-op threads, and on a shared, loaded machine thread spin-waits make them 40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny_model_dir(tmp_path):
    """A saved tiny model and tokenizer (``tmp_path / "base"``), for tests that load a model by path."""
    path = tmp_path / "base"
    make_tiny_qwen2(seed=0).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``make_tiny_qwen2`` for tests that need a fresh model (own generation config or mode)."""
    return make_tiny_qwen2
