"""Servers for the HTTP tests, each on a free port of 127.0.0.1 in a thread, stopped after its module:
the embedded model (the bootstrapped one the demo uses: real answers), and a randomly initialised
tiny model whose thinkings rarely close (long streams, for answer-now, disconnects and timeouts)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import httpx
import pytest

from anytime_reasoner.config import ServeConfig, build_config
from anytime_reasoner.serve.cli import background_server, build_state

QUESTION = (
    "a=45\nb=37\nc=19\nd=26\nWhich value is the largest? Let's think step by step and output the final answer within \\boxed{}."
)


@contextlib.contextmanager
def serving(model: str, *overrides: str) -> Iterator[tuple[str, object]]:
    cfg = build_config(ServeConfig, overrides=[f"model={model}", "device=cpu", "served_model_name=tiny", *overrides])
    state = build_state(cfg)
    with background_server(state) as url:
        yield url, state


@pytest.fixture(scope="module")
def embedded_model() -> str:
    from anytime_reasoner.tasks.bootstrap import ensure_base_model

    return str(ensure_base_model(progress=False))


@pytest.fixture(scope="module")
def embedded(embedded_model):
    with serving(embedded_model, "summary_max_tokens=16") as served:
        yield served


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> str:
    """A random tiny model that never ends a thinking or a summary by itself: its output head is
    scaled 50x (sampling is near-greedy over the other tokens) with zero rows for think-end and the
    EOS ids, whose logits (0) then never win. Its streams run to their caps."""
    import torch

    from tests.conftest import make_tiny_qwen2, make_tokenizer

    path = tmp_path_factory.mktemp("random") / "model"
    model, tokenizer = make_tiny_qwen2(seed=0), make_tokenizer()
    with torch.no_grad():
        head = model.get_output_embeddings().weight  # [V, H] (not tied to the embeddings)
        head.mul_(50.0)
        for token in {tokenizer.convert_tokens_to_ids("</think>"), tokenizer.eos_token_id, tokenizer.pad_token_id}:
            head[token] = 0.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """``(event, data)`` pairs of a server-sent-event stream."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event is not None:
            yield event, json.loads(line[len("data: ") :])
            event = None


def anytime_body(budgets, question: str = QUESTION, **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}], "budgets": budgets, **extra}


def post(url: str, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kwargs)
