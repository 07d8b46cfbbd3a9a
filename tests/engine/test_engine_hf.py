"""TransformersEngine on a tiny random Qwen2 (CPU): shapes, stops, seeds, and prefix reuse.

Prefix reuse is checked two ways: greedy continuations from the cached, left-padded path equal
plain ``generate`` on each unpadded prefix, and seeded samples equal those of the re-encoding
path (same logits, same RNG stream → same tokens). A forward hook shows that ``generate`` itself
only runs the last prefix token when the cache is reused.
"""

import logging

import pytest
import torch

from anytime_reasoner.engine import hf
from anytime_reasoner.engine.base import ForcedAnswer, SamplingParams
from anytime_reasoner.engine.decode import output_cache
from anytime_reasoner.engine.hf import TransformersEngine, left_pad, plan_chunks, position_ids

pytestmark = pytest.mark.usefixtures("single_thread")

PAD = 256  # tests/conftest.py: <pad>
PREFIXES = [[5, 6, 7, 8, 9, 10, 11], [20], [30, 31, 32]]  # lengths 7, 1, 3 → left padding


def reference(model, prefix, max_new_tokens):
    """Plain greedy generate on one unpadded prefix, no stop ids."""
    out = model.generate(
        input_ids=torch.tensor([prefix]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=[],
        pad_token_id=PAD,
    )
    return tuple(out[0, len(prefix) :].tolist())


@pytest.fixture
def engine(tiny_model):
    return TransformersEngine(tiny_model, pad_token_id=PAD)


def test_helpers_left_pad_and_positions():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_plan_chunks_respects_rows_and_tokens():
    # lengths 5, 9, 2 with 2 samples each → sorted longest first: 1 (9), 0 (5), 2 (2)
    assert plan_chunks([5, 9, 2], [2, 2, 2], 1, max_rows=4, max_tokens=None) == [[1, 0], [2]]
    # token cap 25: group {1}: 2 rows × (9 + 1) = 20; adding 0 → 4 × 10 = 40 > 25 → new group
    assert plan_chunks([5, 9, 2], [2, 2, 2], 1, max_rows=8, max_tokens=25) == [[1], [0, 2]]
    # a prefix needing more rows than the cap gets its own group; zero counts are dropped
    assert plan_chunks([5, 9], [7, 0], 1, max_rows=4, max_tokens=None) == [[0]]
    # one-token prefixes are grouped apart from longer ones
    assert plan_chunks([1, 3, 1], [1, 1, 1], 1, max_rows=8, max_tokens=None) == [[1], [0, 2]]


def test_shapes_and_length_finish(engine):
    out = engine.sample(PREFIXES, 2, SamplingParams(max_new_tokens=6, temperature=1.0, seed=0))
    assert [len(row) for row in out] == [2, 2, 2]
    assert all(len(c.token_ids) == 6 and c.finish_reason == "length" for row in out for c in row)


def test_per_prefix_counts(engine):
    out = engine.sample(PREFIXES, [0, 3, 1], SamplingParams(max_new_tokens=2, temperature=1.0, seed=0))
    assert [len(row) for row in out] == [0, 3, 1]


def test_greedy_cached_path_equals_plain_generate(tiny_model, engine):
    calls = []
    handle = tiny_model.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        out = engine.sample(PREFIXES, 2, SamplingParams(max_new_tokens=8, temperature=0))
    finally:
        handle.remove()
    for prefix, row in zip(PREFIXES, out, strict=False):
        ref = reference(tiny_model, prefix, 8)
        assert [c.token_ids for c in row] == [ref, ref]
    # chunk 1 = prefixes of lengths 7 and 3: the prefill of ids[:, :-1] → [2, 7 - 1]; generate's first
    # step then sees only the last prefix token of the 2 × 2 expanded rows → [4, 1]
    assert calls[0] == (2, 6)
    assert calls[1] == (4, 1)
    # the one-token prefix [20] has nothing to prefill: its own chunk, generate on [2, 1]
    assert (2, 1) in calls[2:] and engine.stats.generate_calls == 2
    # prefill counts real tokens: (7-1) + (3-1) = 8, then one last token per row: 4 + 2 → 14
    assert engine.stats.prefill_tokens == 14


def test_chunked_rows_share_one_prefill(tiny_model):
    # 5 rows per prefix, at most 2 rows per generate → 3 generate calls per prefix from one prefill
    engine = TransformersEngine(tiny_model, pad_token_id=PAD, max_batch_rows=2)
    out = engine.sample(PREFIXES[:1], 5, SamplingParams(max_new_tokens=4, temperature=0))
    assert [c.token_ids for c in out[0]] == [reference(tiny_model, PREFIXES[0], 4)] * 5
    assert engine.stats.generate_calls == 3


def test_stop_ids_end_rows_and_padding_is_stripped(tiny_model, engine):
    ref0 = reference(tiny_model, PREFIXES[0], 8)
    ref2 = reference(tiny_model, PREFIXES[2], 8)
    # stop on the first token of ref0 (after position 0) that appears in neither earlier ref0 nor ref2
    i = next(k for k in range(1, 8) if ref0[k] not in ref0[:k] and ref0[k] not in ref2)
    stop = ref0[i]
    out = engine.sample([PREFIXES[0], PREFIXES[2]], 1, SamplingParams(max_new_tokens=8, temperature=0, stop_token_ids=(stop,)))
    assert out[0][0].token_ids == ref0[: i + 1] and out[0][0].finish_reason == "stop"
    assert out[1][0].token_ids == ref2 and out[1][0].finish_reason == "length"


def test_seed_reproducible_and_scoped(engine):
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=123)
    state = torch.get_rng_state()
    a = engine.sample(PREFIXES, 2, params)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert engine.sample(PREFIXES, 2, params) == a
    other = engine.sample(PREFIXES, 2, SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=124))
    assert other != a


def test_reuse_samples_equal_reencoding_samples(tiny_model, engine):
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=7)
    baseline = TransformersEngine(tiny_model, pad_token_id=PAD, reuse_prefix=False)
    assert engine.sample(PREFIXES, 3, params) == baseline.sample(PREFIXES, 3, params)
    # re-encoding runs every prefix token of every row: 3 × (7 + 1 + 3) = 33
    assert baseline.stats.prefill_tokens == 33


def test_fallback_when_cache_cannot_be_expanded(tiny_model, monkeypatch, caplog):
    monkeypatch.setattr(hf, "expandable", lambda cache: False)
    engine = TransformersEngine(tiny_model, pad_token_id=PAD)
    with caplog.at_level(logging.WARNING, logger="anytime_reasoner.engine.hf"):
        out = engine.sample(PREFIXES, 2, SamplingParams(max_new_tokens=4, temperature=0))
    assert "re-encoding each prefix per sample" in caplog.text
    for prefix, row in zip(PREFIXES, out, strict=False):
        assert [c.token_ids for c in row] == [reference(tiny_model, prefix, 4)] * 2


def test_expandable_on_real_cache(tiny_model):
    out = tiny_model(input_ids=torch.tensor([[1, 2]]), use_cache=True)
    assert hf.expandable(output_cache(out))
    assert not hf.expandable(None)


def test_model_generation_defaults_do_not_change_sampling(tiny_model_factory, engine):
    skewed = tiny_model_factory()  # same weights as tiny_model (seed 0), its own generation config
    skewed.generation_config.top_k = 3
    skewed.generation_config.repetition_penalty = 1.5
    skewed.generation_config.min_p = 0.2
    for params in (
        SamplingParams(max_new_tokens=6, temperature=1.0, seed=11),  # top-k would bite here
        SamplingParams(max_new_tokens=8, temperature=0),  # the repetition penalty here
    ):
        assert TransformersEngine(skewed, pad_token_id=PAD).sample(PREFIXES, 2, params) == engine.sample(PREFIXES, 2, params)


def test_sampling_restores_train_mode(tiny_model_factory):
    model = tiny_model_factory().train()
    TransformersEngine(model, pad_token_id=PAD).sample([[1, 2]], 1, SamplingParams(max_new_tokens=1, temperature=0))
    assert model.training


# ---- answers in the thinking's pass ----


def _two_phase(engine, prefixes, budget, answer):
    """The reference, greedy: the thinking, then its answer from the re-encoded prefix + forced text."""
    stops = (answer.close_id, *answer.stop_ids)
    thinkings = engine.sample(prefixes, 1, SamplingParams(max_new_tokens=budget, temperature=0, stop_token_ids=stops))
    out = []
    for prefix, (t,) in zip(prefixes, thinkings, strict=True):
        if t.token_ids[-1] in answer.stop_ids:
            out.append((t, None))
            continue
        inserted = answer.after_close if t.token_ids[-1] == answer.close_id else answer.after_budget
        params = SamplingParams(max_new_tokens=answer.max_answer_tokens, temperature=0, stop_token_ids=answer.stop_ids)
        (a,) = engine.sample([list(prefix) + list(t.token_ids) + list(inserted)], 1, params)[0]
        out.append((t, (inserted, a)))
    return out


def test_greedy_answers_in_the_pass_equal_thinking_then_answer(tiny_model, engine):
    """Greedy, so both paths pick the same tokens: one pass must give exactly the thinking and the
    answer of two passes in every case — closed by itself, cut at the budget, answer capped, and
    ended by EOS (no answer). The close and EOS ids are taken from the model's own greedy streams."""
    prefixes = [[5, 6, 7, 8, 9, 10, 11], [30, 31, 32], [40, 41], [50, 51, 52, 53], [60], [61, 62]]
    streams = [reference(tiny_model, p, 12) for p in prefixes]
    close_id, eos = streams[0][3], streams[4][1]  # prefix 0 closes itself at token 4, prefix 4 ends by EOS at 2
    answer = ForcedAnswer(close_id=close_id, after_close=(70, 71), after_budget=(72, 73, close_id, 70, 71),
                          max_answer_tokens=3, stop_ids=(eos,))  # fmt: skip
    thinking = SamplingParams(max_new_tokens=6, temperature=0, stop_token_ids=(close_id, eos))
    one_pass = engine.sample_with_answers(prefixes, 1, thinking, answer)
    cases = set()
    for (got,), (t, second) in zip(one_pass, _two_phase(engine, prefixes, 6, answer), strict=True):
        closed = t.token_ids[-1] == close_id
        assert (got.token_ids, got.finish_reason) == (t.token_ids, "stop" if closed else t.finish_reason)
        if second is None:
            assert got.answer is None
            cases.add("eos")
            continue
        inserted, a = second
        assert got.answer is not None and got.answer.inserted_ids == inserted
        assert (got.answer.completion.token_ids, got.answer.completion.finish_reason) == (a.token_ids, a.finish_reason)
        cases |= {"closed" if closed else "cut", "capped" if a.finish_reason == "length" else "stopped"}
    assert {"closed", "cut", "eos", "capped"} <= cases  # answers ended by EOS: the rollout test (a trained model)


def test_sampled_answers_carry_the_log_probs_of_their_prefix(tiny_model, engine):
    """At temperature 1 the pass's answer log-probs equal a teacher-forced forward of prompt +
    thinking + forced text + answer: the answer was sampled from the model given that prefix."""
    prefixes = [[5, 6, 7, 8, 9, 10, 11], [30, 31, 32]]
    answer = ForcedAnswer(close_id=1, after_close=(70,), after_budget=(72, 73, 1, 70), max_answer_tokens=4, stop_ids=(2,))
    params = SamplingParams(max_new_tokens=5, temperature=1.0, stop_token_ids=(1, 2), seed=3, logprobs=True)
    out = engine.sample_with_answers(prefixes, 3, params, answer)
    checked = 0
    for prefix, row in zip(prefixes, out, strict=True):
        for c in row:
            if c.answer is None:
                continue
            ids = list(prefix) + list(c.token_ids) + list(c.answer.inserted_ids) + list(c.answer.completion.token_ids)
            with torch.no_grad():
                logp = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0].float(), -1)  # [T, V]
            start = len(ids) - len(c.answer.completion.token_ids)
            forced = [logp[p - 1, ids[p]].item() for p in range(start, len(ids))]
            assert c.answer.completion.logprobs == pytest.approx(forced, abs=1e-4)
            assert c.logprobs == pytest.approx(
                [logp[p - 1, ids[p]].item() for p in range(len(prefix), len(prefix) + len(c.token_ids))], abs=1e-4
            )
            checked += 1
    assert checked == 6
