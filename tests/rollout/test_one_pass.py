"""The anytime rollout with the last cut's answer sampled in the thinking's pass (``one_pass``), on the
embedded base model (the package's shipped weights) and the real grader.

Greedy decoding makes both paths pick the same tokens, so the one-pass rollout must equal the
two-phase rollout exactly — thinkings, every summary, every reward — while asking the engine for
one summary fewer per thinking that did not end by EOS. With GRPO's shape (one budget, one
summary) the summary phase makes no engine call at all. The summaries forked from the thinking
call's held KV cache equal those of prefixes encoded again, the same way.
"""

import pytest
from transformers import AutoModelForCausalLM

from anytime_reasoner.algo.budgets import BudgetPlan
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import encode_prompt
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.models.loading import generation_eos_ids, load_tokenizer
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier
from anytime_reasoner.rollout.anytime import RolloutParams, anytime_rollout, ended_by_eos, summary_requests
from anytime_reasoner.tasks.bootstrap import ensure_base_model
from anytime_reasoner.tasks.synthetic import synthetic_held_out

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    path = ensure_base_model(tmp_path_factory.mktemp("cache"), progress=False)
    tokenizer = load_tokenizer(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    protocol = AnytimeProtocol()
    codec = TokenizerCodec.for_protocol(tokenizer, protocol, generation_eos_ids(str(path)))
    examples = synthetic_held_out(6)
    prompts = [encode_prompt(tokenizer, e.messages) for e in examples]
    with MathVerifier(GraderSettings.from_protocol(protocol, workers=1)) as verifier:
        yield model, codec, prompts, [list(e.ground_truths) for e in examples], verifier


def _rollout(embedded, plan, one_pass, **params):
    model, codec, prompts, truths, verifier = embedded
    engine = TransformersEngine(model, pad_token_id=codec.pad_id)
    batch = anytime_rollout(engine, codec, prompts, truths, plan, RolloutParams(one_pass=one_pass, **params), verifier)
    return batch, engine.stats


def _tree(batch):
    return [
        [(t.thinking_ids, t.closed, t.cuts, [[(s.inserted_ids, s.sampled_ids, s.reward) for s in per] for per in t.summaries])
         for t in row]
        for row in batch.thinkings
    ]  # fmt: skip


def test_greedy_one_pass_rollout_equals_the_two_phase_rollout(embedded):
    # greedy thinkings of these 6 questions run 37-64 tokens: 12 and 30 cut every one; at 48 four
    # have closed by themselves and two are cut by the pass
    plan = BudgetPlan.build(max_budget=48, budgets=(12, 30, 48))
    params = dict(n_thinking=2, n_summary=2, temperature=0.0, seed=0)
    one, one_stats = _rollout(embedded, plan, True, **params)
    two, two_stats = _rollout(embedded, plan, False, **params)
    assert _tree(one) == _tree(two)
    thinkings = [t for row in one.thinkings for t in row]
    assert any(t.closed for t in thinkings) and not all(t.closed for t in thinkings)
    assert float(one.scores().mean()) > 0  # real answers, some right
    # one summary row fewer per thinking with an answer in its pass (all but those ended by EOS)
    eos_id = embedded[1].eos_id
    assert two_stats.sampled_rows - one_stats.sampled_rows == sum(not ended_by_eos(t, eos_id) for t in thinkings)


def test_grpo_shaped_rollout_samples_everything_in_one_pass(embedded):
    """S = A = 1 at temperature 1: each summary is the answer of its thinking's pass, so the only
    engine call is the thinkings' (6 questions x 8 = 48 rows, one call), plus one for the thinkings
    ended by EOS, if any (their summaries come from the summary phase, as before)."""
    codec = embedded[1]
    plan = BudgetPlan.build(max_budget=40, n_support=1)
    batch, stats = _rollout(embedded, plan, True, n_thinking=8, n_summary=1, temperature=1.0, seed=1)
    thinkings = [t for row in batch.thinkings for t in row]
    by_eos = sum(ended_by_eos(t, codec.eos_id) for t in thinkings)
    assert batch.shape == (6, 8, 1, 1)
    assert (stats.generate_calls, stats.sampled_rows) == (1 + (by_eos > 0), 48 + by_eos)
    inserted = AnytimeProtocol().inserted_ids(codec)
    for t in thinkings:
        (s,) = t.summaries[0]
        assert s.inserted_ids == list(inserted.of(t.closed))  # the delimiter after a close, else the cut text
        assert 1 <= len(s.sampled_ids) <= AnytimeProtocol().summary_max_tokens
    stopped = [t.summaries[0][0] for t in thinkings if t.summaries[0][0].sampled_ids[-1] in codec.eos_ids]
    assert stopped and all(s.finish_reason == "stop" for s in stopped)
    assert 0 < float(batch.scores().mean()) < 1


@pytest.mark.parametrize("one_pass, budgets, n_summary, expected", [
    ("auto", 1, 1, True),  # GRPO: the pass samples every summary, no second phase
    ("auto", 4, 1, False),  # three more cuts per thinking: the second phase runs anyway
    ("auto", 1, 4, False),  # three more summaries of the one cut
    (True, 4, 4, True),
    (False, 1, 1, False),
])  # fmt: skip
def test_one_pass_auto_is_on_where_it_leaves_no_second_phase(one_pass, budgets, n_summary, expected):
    params = RolloutParams(n_thinking=8, n_summary=n_summary, one_pass=one_pass)
    assert params.in_one_pass(budgets) is expected


def test_summaries_forked_from_the_thinking_cache_equal_re_encoded_ones(embedded):
    """Two phases, greedy: the summaries read from the thinking call's held KV cache are those of a
    rollout that encodes every summary prefix again (thinkings, summaries, rewards), while the summary
    call runs at most the inserted text and one more token per prefix (the last thinking token of the
    call's longest rows never ran while decoding), once per prefix, not once per summary row."""
    model, codec, prompts, truths, verifier = embedded
    plan = BudgetPlan.build(max_budget=48, budgets=(12, 30, 48))
    params = RolloutParams(n_thinking=2, n_summary=2, temperature=0.0, seed=0, one_pass=False)
    forked_engine = TransformersEngine(model, pad_token_id=codec.pad_id)
    again_engine = TransformersEngine(model, pad_token_id=codec.pad_id, prefix_caching=False)
    forked = anytime_rollout(forked_engine, codec, prompts, truths, plan, params, verifier)
    again = anytime_rollout(again_engine, codec, prompts, truths, plan, params, verifier)
    assert _tree(forked) == _tree(again)
    inserted = AnytimeProtocol().inserted_ids(codec)
    requests = summary_requests(forked.thinkings, plan.budgets, inserted)
    thinking = sum(len(p) - 1 for p in prompts) + 12  # the thinking call: each prompt's prefill, each row's last prompt token
    rows = again_engine.stats.sampled_rows - 12  # summary rows
    assert forked_engine.stats.sampled_rows - 12 == rows == forked_engine.stats.held_rows  # all read their heads in place
    run_again = again_engine.stats.prefill_tokens - thinking - rows  # the last prefix token is run by each row
    assert run_again == sum(len(r.prefix) - 1 for r in requests)  # every prefix prefilled again
    run_forked = forked_engine.stats.prefill_tokens - thinking  # each prefix's rest once, its last token included
    assert 0 < run_forked <= sum(len(inserted.of(r.group.natural)) + 1 for r in requests)
    assert forked_engine.stats.reused_prefix_tokens + run_forked == sum(len(r.prefix) for r in requests)  # the rest held
