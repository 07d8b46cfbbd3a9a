"""The prompt-budget evaluation mode and the tokens spent per budget, with a scripted budget-aware model.

The scripted model (byte tokens of the root conftest; ``</think>`` 259, ``<eos>`` 257):

- told "Think for N tokens.", it thinks ``N // 2`` tokens ending with the insight "!", then
  closes: length N // 2 + 1 (think-end counted), always within N;
- told nothing, it thinks 20 tokens with "!" at token 10 and never closes.

A summary is right iff the kept thinking holds "!". Budgets (4, 8, 12):

- prompt-budget mode: lengths 3, 5, 7, all closed with "!" → accuracy [1, 1, 1], tokens [3, 5, 7];
- anytime mode (no sentence): cuts 4, 8, 12 → "!" kept only at 12 → accuracy [0, 0, 1], tokens [4, 8, 12].
"""

from __future__ import annotations

import json
import re

import pytest
from scripted_world import ExactVerifier

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.scripted import ScriptedEngine
from anytime_reasoner.eval.report import markdown, results_json
from anytime_reasoner.eval.runner import EvalSettings, evaluate
from anytime_reasoner.protocol import AnytimeProtocol

EOS, THINK_END = 257, 259
BUDGETS = (4, 8, 12)


def budget_aware_engine(tokenizer) -> ScriptedEngine:
    def script(prefix, index):
        text = tokenizer.decode(list(prefix), skip_special_tokens=False)
        if text.endswith("<think>\n"):
            told = re.search(r"Think for (\d+) tokens\.", text)
            if told:
                n = int(told.group(1)) // 2
                return list(b"a" * (n - 1)) + [ord("!"), THINK_END]
            return list(b"abcdefghi!klmnopqrst")
        kept = text.split("<think>\n", 1)[1]
        return list(f"\\boxed{{{'7' if '!' in kept else '0'}}}".encode()) + [EOS]

    return ScriptedEngine(script)


def _settings(mode: str) -> EvalSettings:
    return EvalSettings(model="scripted", budgets=BUDGETS, samples=2, protocol=AnytimeProtocol(summary_max_tokens=16), mode=mode)


@pytest.fixture
def codec(tiny_tokenizer):
    return TokenizerCodec.from_tokenizer(tiny_tokenizer)


def _examples():
    return [Example.from_problem("Q1", "toy", "What is Q1?", ("7",))]


def test_prompt_budget_mode_states_each_budget_and_caps_at_it(tiny_tokenizer, codec):
    engine = budget_aware_engine(tiny_tokenizer)
    res = evaluate(engine, codec, ExactVerifier(), {"toy": _examples()}, _settings("prompt-budget"))
    bench = res.benchmarks["toy"]
    assert bench.scores.accuracy == pytest.approx((1.0, 1.0, 1.0))
    assert bench.tokens_used == pytest.approx((3.0, 5.0, 7.0))  # N // 2 + 1 for N = 4, 8, 12
    thinking_calls = [c for c in engine.calls if c.params.stop_token_ids != (EOS,)]
    assert [c.params.max_new_tokens for c in thinking_calls] == list(BUDGETS)  # one generation per budget, capped at it
    for call, budget in zip(thinking_calls, BUDGETS, strict=True):
        assert f"Think for {budget} tokens.".encode() in bytes(t for t in call.prefixes[0] if t < 256)
    row = results_json(res)
    assert row["mode"] == "prompt-budget" and row["average"]["tokens_used"] == pytest.approx([3.0, 5.0, 7.0])
    assert "| 12 | 100.0 | 100.0 | 7.0 |" in markdown(res)  # the tokens-used column


def test_anytime_mode_records_the_cut_as_the_tokens_spent(tiny_tokenizer, codec):
    engine = budget_aware_engine(tiny_tokenizer)
    res = evaluate(engine, codec, ExactVerifier(), {"toy": _examples()}, _settings("anytime"))
    bench = res.benchmarks["toy"]
    assert bench.scores.accuracy == pytest.approx((0.0, 0.0, 1.0))
    assert bench.tokens_used == pytest.approx((4.0, 8.0, 12.0))
    assert len(engine.calls) == 2  # still one pass: one thinking call and one summary call
    assert results_json(res)["mode"] == "anytime"


def test_the_mode_keys_the_cache_and_old_keys_stay():
    anytime, prompted = _settings("anytime"), _settings("prompt-budget")
    assert anytime.key() != prompted.key()
    assert "mode" not in anytime.as_json()  # the anytime key is the one earlier versions wrote
    assert json.loads(json.dumps(prompted.as_json()))["budget_prompt"] == "Think for {n} tokens."
