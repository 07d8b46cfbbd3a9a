"""One-pass evaluation with a scripted engine: exact accuracies, one generation, resume, reports.

The world is described in ``scripted_world.py``; budgets are (4, 8, 12). Per thinking, correct at
budget b iff the first b kept tokens hold the "!" (and the thinking was not ended by EOS):

    Q1 s0: "!" at token 3, closed at 9   → [1, 1, 1]
    Q1 s1: "!" at token 7, cap           → [0, 1, 1]
    Q2 s0: "!" at token 12, cap          → [0, 0, 1]
    Q2 s1: ended by EOS                  → [0, 0, 0]

accuracy = column sums / 4 = [1/4, 2/4, 3/4]; anytime (uniform) = (0.25 + 0.5 + 0.75) / 3 = 0.5;
final = 0.75. Per sample: s0 = mean(Q1 s0, Q2 s0) = [0.5, 0.5, 1.0], s1 = [0, 0.5, 0.5];
population std per budget = [0.25, 0, 0.25]; anytime per sample 2/3 and 1/3 → std 1/6.
"""

from __future__ import annotations

import json

import pytest
from scripted_world import ExactVerifier, scripted_engine, scripted_examples

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.eval.report import markdown, results_json, write_results
from anytime_reasoner.eval.runner import CACHE_FILE, EvalSettings, ResultCache, evaluate
from anytime_reasoner.protocol import AnytimeProtocol

BUDGETS = (4, 8, 12)


def settings(batch_size: int = 2) -> EvalSettings:
    return EvalSettings(
        model="scripted", budgets=BUDGETS, samples=2, protocol=AnytimeProtocol(summary_max_tokens=16), batch_size=batch_size
    )


@pytest.fixture
def codec(tiny_tokenizer):
    return TokenizerCodec.from_tokenizer(tiny_tokenizer)


def test_exact_accuracy_per_budget_from_one_generation(tiny_tokenizer, codec):
    engine = scripted_engine(tiny_tokenizer)
    res = evaluate(engine, codec, ExactVerifier(), {"toy": scripted_examples()}, settings())
    s = res.benchmarks["toy"].scores
    assert s.accuracy == pytest.approx((0.25, 0.5, 0.75))
    assert s.std == pytest.approx((0.25, 0.0, 0.25))
    assert s.anytime == pytest.approx(0.5) and s.final == pytest.approx(0.75)
    assert s.anytime_std == pytest.approx(1 / 6) and s.final_std == pytest.approx(0.25)
    # One pass: one thinking call (the two prompts, n=2, cap = largest budget) + one summary call.
    assert len(engine.calls) == 2
    think = engine.calls[0]
    assert think.counts == (2, 2) and think.params.max_new_tokens == 12
    assert all(p[-2:] == (258, 10) for p in think.prefixes)  # every prompt ends "<think>\n"
    # lengths 9, 12 (Q1) and 12, 4 (Q2): mean 37/4, median (9 + 12)/2, one of four closed
    t = res.benchmarks["toy"].thinking
    assert (t.mean, t.median, t.max, t.closed_fraction) == (9.25, 10.5, 12, 0.25)


def test_linear_prior_and_average_row(tiny_tokenizer, codec):
    two = {"a": scripted_examples()[:1], "b": scripted_examples()[1:]}
    res = evaluate(scripted_engine(tiny_tokenizer), codec, ExactVerifier(), two, settings(), prior="linear")
    # a = Q1 → [1/2, 1, 1]; b = Q2 → [0, 0, 1/2]; average (equal weight) = [1/4, 1/2, 3/4]
    assert res.benchmarks["a"].scores.accuracy == pytest.approx((0.5, 1.0, 1.0))
    assert res.benchmarks["b"].scores.accuracy == pytest.approx((0.0, 0.0, 0.5))
    assert res.average.accuracy == pytest.approx((0.25, 0.5, 0.75))
    # linear weights 4/24, 8/24, 12/24: (0.25·4 + 0.5·8 + 0.75·12) / 24 = 14/24
    assert res.average.anytime == pytest.approx(14 / 24)
    assert res.probs == pytest.approx((4 / 24, 8 / 24, 12 / 24))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tiny_tokenizer, codec, tmp_path):
    data = {"toy": scripted_examples()}
    full = evaluate(
        scripted_engine(tiny_tokenizer),
        codec,
        ExactVerifier(),
        data,
        settings(batch_size=1),
        cache=ResultCache(tmp_path / "full" / CACHE_FILE, settings(1).key()),
    )

    engine = scripted_engine(tiny_tokenizer)
    real_sample = engine.sample

    def dies_on_second_problem(prefixes, n, params):
        if any(b"Q2" in bytes(t for t in p if t < 256) for p in prefixes):
            raise Interrupt
        return real_sample(prefixes, n, params)

    engine.sample = dies_on_second_problem
    cache = ResultCache(tmp_path / "resumed" / CACHE_FILE, settings(1).key())
    with pytest.raises(Interrupt):
        evaluate(engine, codec, ExactVerifier(), data, settings(batch_size=1), cache=cache)
    assert len((tmp_path / "resumed" / CACHE_FILE).read_text().splitlines()) == 1  # Q1 was saved

    engine2 = scripted_engine(tiny_tokenizer)
    resumed = evaluate(engine2, codec, ExactVerifier(), data, settings(batch_size=1), cache=cache)
    assert (resumed.chunks_run, resumed.chunks_cached) == (1, 1)
    assert all(b"Q1" not in bytes(t for t in p if t < 256) for p in engine2.calls[0].prefixes)
    assert resumed.problems == full.problems
    assert results_json(resumed) == results_json(full)


def test_cache_ignores_other_settings_and_torn_lines(tiny_tokenizer, codec, tmp_path):
    path = tmp_path / CACHE_FILE
    data = {"toy": scripted_examples()}
    evaluate(scripted_engine(tiny_tokenizer), codec, ExactVerifier(), data, settings(), cache=ResultCache(path, settings().key()))
    with path.open("a") as handle:
        handle.write('{"settings": "x", "benchm')  # a write torn by a crash
    other = EvalSettings(
        model="scripted", budgets=BUDGETS, samples=2, protocol=AnytimeProtocol(summary_max_tokens=16), temperature=1.0
    )
    assert other.key() != settings().key()
    res = evaluate(scripted_engine(tiny_tokenizer), codec, ExactVerifier(), data, other, cache=ResultCache(path, other.key()))
    assert res.chunks_run == 1 and res.chunks_cached == 0
    again = evaluate(
        scripted_engine(tiny_tokenizer), codec, ExactVerifier(), data, settings(), cache=ResultCache(path, settings().key())
    )
    assert again.chunks_run == 0 and again.benchmarks["toy"].scores.accuracy == pytest.approx((0.25, 0.5, 0.75))


def test_reports_shape(tiny_tokenizer, codec, tmp_path):
    res = evaluate(scripted_engine(tiny_tokenizer), codec, ExactVerifier(), {"toy": scripted_examples()}, settings())
    paths = write_results(res, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["budgets"] == [4, 8, 12] and data["model"] == "scripted"
    toy = data["benchmarks"]["toy"]
    assert toy["accuracy"] == pytest.approx([0.25, 0.5, 0.75])
    assert (toy["anytime"], toy["final"], toy["n_problems"], toy["n_samples"]) == (pytest.approx(0.5), 0.75, 2, 2)
    assert data["average"]["accuracy"] == pytest.approx([0.25, 0.5, 0.75])
    assert data["settings"]["prior"] == "uniform" and data["settings"]["samples"] == 2
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0] == "benchmark,budget,accuracy,std"
    assert csv_lines[1] == "toy,4,0.250000,0.250000" and len(csv_lines) == 1 + 2 * 3  # toy + average
    table = markdown(res)
    assert "| toy | 2 | 50.0 ± 16.7 | 75.0 ± 25.0 | 9 | 25% |" in table
    assert "| 12 | 75.0 | 75.0 |" in table
