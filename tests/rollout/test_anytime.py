"""The anytime rollout on scripted token streams, checked by hand.

Tokenizer (tests/conftest.py): byte b has id b; ``<think>`` 258, ``</think>`` 259, ``<eos>`` 257.
Budgets (4, 8, 12); prompts ``"Q0<think>\\n"`` / ``"Q1<think>\\n"`` = 4 tokens each.
Inserted: closed = "\\n\\n**Final Answer**\\n" = 2+2+12+2+1 = 19 tokens;
forced = "...\\n\\n...\\n\\n" (10) + </think> (1) + delimiter (19) = 30 tokens.

Thinkings (sample index g, same for both questions):
  g0 "ab</think>"          L=3,  closed before b1 → cuts (3,3,3)   one natural prefix, n = 2·3
  g1 "abcdefg</think>"     L=8,  closed exactly at b2 → (4,8,8)   forced 4; natural 8 (n = 2·2)
  g2 "abcdefghij</think>"  L=11, closed after b2 → (4,8,11)       forced, forced, natural
  g3 "abcdefghijklmnop"    unfinished: cut at the cap 12 → (4,8,12), all forced
  g4 "abcde<eos>"          L=6,  ended by EOS → (4,6,6)            forced 4; forced 6 (n = 2·2)

Summary script: sample i of a prefix with cut c emits "{i}\\boxed{c}<eos>" for even i and "{i}<eos>"
for odd i. Samples are dealt A=2 per budget in budget order, so a=0 is always an even i (boxed)
and a=1 an odd i (no answer → wrong).
"""

import pytest

from anytime_reasoner.algo.budgets import BudgetPlan
from anytime_reasoner.config import RolloutConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.engine.scripted import ScriptedEngine
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.rewards.base import Grade
from anytime_reasoner.rollout.anytime import (
    RolloutParams,
    anytime_rollout,
    cut_groups,
)
from anytime_reasoner.seeding import derive_seed

pytestmark = pytest.mark.usefixtures("single_thread")

THINKINGS = ["ab</think>", "abcdefg</think>", "abcdefghij</think>", "abcdefghijklmnop", "abcde<eos>"]
PROMPT_LEN = 4
CLOSED_LEN, FORCED_LEN = 19, 30


class ContainsVerifier:
    """Correct iff the text after the last delimiter contains \\boxed{truth}; well-formed iff
    exactly one </think>. Records what it was asked to grade."""

    def __init__(self):
        self.seen: list[tuple[str, list[str]]] = []

    def grade(self, responses, ground_truths):
        grades = []
        for response, truths in zip(responses, ground_truths, strict=False):
            self.seen.append((response, list(truths)))
            summary = response.rsplit("**Final Answer**\n", 1)[-1]
            correct = any(f"\\boxed{{{t}}}" in summary for t in truths)
            grades.append(Grade(correct=correct, well_formed=response.count("</think>") == 1, extracted=None))
        return grades


@pytest.fixture
def codec(tiny_tokenizer):
    return TokenizerCodec.from_tokenizer(tiny_tokenizer)


def make_engine(codec):
    forced = AnytimeProtocol(cut_marker="...\n\n...\n\n", answer_delimiter="\n\n**Final Answer**\n").inserted_ids(codec).forced

    def script(prefix, i):
        if len(prefix) == PROMPT_LEN:  # thinking phase
            return codec.encode(THINKINGS[i])
        inserted = FORCED_LEN if prefix[-FORCED_LEN:] == forced else CLOSED_LEN
        cut = len(prefix) - PROMPT_LEN - inserted
        text = f"{i}\\boxed{{{cut}}}" if i % 2 == 0 else f"{i}"
        return codec.encode(text) + [codec.eos_id]

    return ScriptedEngine(script)


def run(codec, engine, verifier, truths=(["8"], ["4"])):
    prompts = [codec.encode("Q0<think>\n"), codec.encode("Q1<think>\n")]
    plan = BudgetPlan.build(12, budgets=[4, 8, 12], prior="uniform")
    params = RolloutParams(n_thinking=5, n_summary=2, temperature=1.0, seed=3, protocol=AnytimeProtocol(summary_max_tokens=16))
    return anytime_rollout(engine, codec, prompts, list(truths), plan, params, verifier)


def test_ids_come_from_the_tokenizer(codec):
    assert (codec.think_start_id, codec.think_end_id, codec.eos_id, codec.pad_id) == (258, 259, 257, 256)
    inserted = AnytimeProtocol(cut_marker="...\n\n...\n\n", answer_delimiter="\n\n**Final Answer**\n").inserted_ids(codec)
    assert len(inserted.closed) == CLOSED_LEN and len(inserted.forced) == FORCED_LEN
    # "...\n\n...\n\n" = 46 46 46 10 10 46 46 46 10 10, then </think>, then the delimiter
    assert inserted.forced[:11] == (46, 46, 46, 10, 10, 46, 46, 46, 10, 10, 259)
    assert inserted.forced[11:] == inserted.closed
    assert codec.decode(inserted.closed) == "\n\n**Final Answer**\n"


def test_cut_groups_by_hand():
    budgets = (4, 8, 12)
    # (cut, natural, budgets sharing it)
    assert [(g.cut, g.natural, g.budget_indices) for g in cut_groups(3, True, budgets)] == [(3, True, (0, 1, 2))]
    assert [(g.cut, g.natural, g.budget_indices) for g in cut_groups(8, True, budgets)] == [(4, False, (0,)), (8, True, (1, 2))]
    assert [(g.cut, g.natural, g.budget_indices) for g in cut_groups(12, False, budgets)] == [
        (4, False, (0,)),
        (8, False, (1,)),
        (12, False, (2,)),
    ]
    assert [(g.cut, g.natural, g.budget_indices) for g in cut_groups(6, False, budgets)] == [(4, False, (0,)), (6, False, (1, 2))]


def test_thinking_cuts_and_flags(codec):
    batch = run(codec, make_engine(codec), ContainsVerifier())
    row = batch.thinkings[0]
    assert [t.length for t in row] == [3, 8, 11, 12, 6]
    assert [t.cuts for t in row] == [[3, 3, 3], [4, 8, 8], [4, 8, 11], [4, 8, 12], [4, 6, 6]]
    assert [t.closed for t in row] == [True, True, True, False, False]
    assert [t.finish_reason for t in row] == ["stop", "stop", "stop", "length", "stop"]
    assert row[3].thinking_ids == codec.encode("abcdefghijkl")  # truncated at the cap b_m = 12
    assert batch.shape == (2, 5, 3, 2)


def test_one_prefix_per_distinct_cut(codec):
    engine = make_engine(codec)
    run(codec, engine, ContainsVerifier())
    assert len(engine.calls) == 2  # thinking phase, summary phase
    think, summ = engine.calls
    assert think.prefix_lengths == (4, 4) and think.counts == (5, 5)
    assert think.params.max_new_tokens == 12 and think.params.stop_token_ids == (259, 257)
    assert summ.params.max_new_tokens == 16 and summ.params.stop_token_ids == (257,)
    # each phase samples with its own stream, derived from (rollout seed, phase)
    assert think.params.seed == derive_seed(3, "thinking") and summ.params.seed == derive_seed(3, "summary")
    assert think.params.seed != summ.params.seed
    # per question: g0 1 prefix, g1 2, g2 3, g3 3, g4 2 → 11 (instead of 5 × 3 = 15)
    # lengths 4 + cut + (19 natural | 30 forced):
    #   g0 3+19 → 26;  g1 4+30 → 38, 8+19 → 31;  g2 38, 8+30 → 42, 11+19 → 34;
    #   g3 38, 42, 12+30 → 46;  g4 38, 6+30 → 40
    per_question = (26, 38, 31, 38, 42, 34, 38, 42, 46, 38, 40)
    assert summ.prefix_lengths == per_question * 2
    # n = A × budgets sharing: g0 2·3; g1 2, 2·2; g2 2,2,2; g3 2,2,2; g4 2, 2·2
    assert summ.counts == (6, 2, 4, 2, 2, 2, 2, 2, 2, 2, 4) * 2
    assert sum(summ.prefix_lengths) == 2 * 413


def test_samples_dealt_per_budget_and_inserted_ids(codec):
    batch = run(codec, make_engine(codec), ContainsVerifier())
    g0 = batch.thinkings[0][0]
    # one shared prefix, samples 0..5: budget 0 gets 0,1; budget 1 gets 2,3; budget 2 gets 4,5
    assert [[s.text for s in per_budget] for per_budget in g0.summaries] == [
        ["0\\boxed{3}", "1"],
        ["2\\boxed{3}", "3"],
        ["4\\boxed{3}", "5"],
    ]
    assert g0.summaries[1][0].sampled_ids == codec.encode("2\\boxed{3}") + [257]  # EOS kept as sampled
    assert g0.summaries[1][0].finish_reason == "stop"
    closed = codec.encode("\n\n**Final Answer**\n")
    assert all(s.inserted_ids == closed for per_budget in g0.summaries for s in per_budget)
    g1 = batch.thinkings[0][1]
    assert g1.summaries[0][0].inserted_ids == codec.encode("...\n\n...\n\n") + [259] + closed
    assert [[s.text for s in per_budget] for per_budget in g1.summaries] == [
        ["0\\boxed{4}", "1"],
        ["0\\boxed{8}", "1"],
        ["2\\boxed{8}", "3"],
    ]


def test_responses_sent_to_the_verifier(codec):
    verifier = ContainsVerifier()
    run(codec, make_engine(codec), verifier)
    assert len(verifier.seen) == 2 * 5 * 3 * 2  # B·G·S·A
    responses = [r for r, _ in verifier.seen]
    # q0 g0 (first request): whole thinking + delimiter + summary
    assert responses[0] == "ab</think>\n\n**Final Answer**\n0\\boxed{3}"
    # q0 g3 budget 0: cut inside, forced insertion
    assert "abcd...\n\n...\n\n</think>\n\n**Final Answer**\n0\\boxed{4}" in responses
    assert verifier.seen[0][1] == ["8"] and verifier.seen[-1][1] == ["4"]


def test_scores_and_segment_mask(codec):
    batch = run(codec, make_engine(codec), ContainsVerifier())
    scores = batch.scores()
    assert scores.shape == (2, 5, 3, 2)
    assert scores[..., 1].sum() == 0  # a = 1 is always an odd sample: no answer
    # q0, truth 8: cuts g0 (3,3,3) g1 (4,8,8) g2 (4,8,11) g3 (4,8,12) g4 (4,6,6)
    assert scores[0, :, :, 0].tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0], [0, 1, 0], [0, 0, 0]]
    # q1, truth 4: cut 4 is correct for g1..g4. g4 ended by EOS ("abcde<eos>", L = 6): only the
    # prefix holding the EOS (cut 6, budgets 8 and 12) scores 0; its cut at 4 ("abcd") holds no
    # EOS and is graded as usual → 1.
    assert scores[1, :, :, 0].tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    # segments (0,4], (4,8], (8,12]: non-empty iff L > segment start (0, 4, 8)
    #   L = 3 → T F F;  8 → T T F;  11 → T T T;  12 → T T T;  6 → T T F
    expected = [[True, False, False], [True, True, False], [True, True, True], [True, True, True], [True, True, False]]
    assert batch.segment_mask().tolist() == [expected, expected]


def test_eos_zeroes_only_the_prefix_that_holds_it(codec):
    # One thinking "abcde<eos>" (L = 6, ended by EOS), budgets 4, 8, 12, truth "4" for every cut
    # via a script that always answers \boxed{4}: cut 4 → graded (1); cuts 6, 6 (EOS inside) → 0.
    engine = ScriptedEngine(
        lambda prefix, i: codec.encode("abcde<eos>") if len(prefix) == PROMPT_LEN else codec.encode("\\boxed{4}<eos>")
    )
    plan = BudgetPlan.build(12, budgets=[4, 8, 12], prior="uniform")
    params = RolloutParams(n_thinking=1, n_summary=2, temperature=1.0, protocol=AnytimeProtocol(summary_max_tokens=16))
    batch = anytime_rollout(engine, codec, [codec.encode("Q0<think>\n")], [["4"]], plan, params, ContainsVerifier())
    assert batch.thinkings[0][0].cuts == [4, 6, 6]
    assert batch.scores()[0, 0].tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]


def test_another_eos_id_of_the_model_ends_a_thinking_that_is_graded(tiny_tokenizer):
    # The model's generation config lists a second EOS id beside the tokenizer's <eos> 257 (here 260,
    # <|user|>). Thinkings and summaries stop on both. A thinking that stops on 260 ("abcde" + 260, L = 6)
    # did not end on the tokenizer's EOS: it is cut there like an unfinished thinking (forced text at
    # cuts 4, 6, 6) and every cut is graded (all answer \boxed{4} → 1), as the original grades every
    # prefix not ending in its EOS_ID; the tokenizer's EOS still zeroes its prefix (test above).
    codec = TokenizerCodec.from_tokenizer(tiny_tokenizer, extra_eos_ids=(260, 257))
    assert codec.eos_ids == (257, 260) and codec.eos_id == 257
    engine = ScriptedEngine(
        lambda prefix, i: codec.encode("abcde") + [260] if len(prefix) == PROMPT_LEN else codec.encode("\\boxed{4}<eos>")
    )
    plan = BudgetPlan.build(12, budgets=[4, 8, 12], prior="uniform")
    params = RolloutParams(n_thinking=1, n_summary=2, temperature=1.0, protocol=AnytimeProtocol(summary_max_tokens=16))
    batch = anytime_rollout(engine, codec, [codec.encode("Q0<think>\n")], [["4"]], plan, params, ContainsVerifier())
    thinking_call, summary_call = engine.calls
    assert thinking_call.params.stop_token_ids == (259, 257, 260)  # </think>, then every EOS id
    assert summary_call.params.stop_token_ids == (257, 260)
    t = batch.thinkings[0][0]
    assert (t.closed, t.finish_reason, t.cuts) == (False, "stop", [4, 6, 6])
    assert batch.scores()[0, 0].tolist() == [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]


def test_eval_grid_dedupes_budgets_past_the_end(codec):
    # 32 budgets 2, 4, …, 64; one thinking of L = 9 (closed): budgets 2, 4, 6, 8 cut inside,
    # the 28 budgets ≥ 10 share the whole thinking → 5 prefixes, counts 1,1,1,1,28 (A = 1)
    engine = ScriptedEngine(lambda prefix, i: codec.encode("abcdefgh</think>") if len(prefix) == PROMPT_LEN else [codec.eos_id])
    plan = BudgetPlan.build(64, budgets=list(range(2, 65, 2)), prior="uniform")
    params = RolloutParams(n_thinking=1, n_summary=1, temperature=0.6)
    batch = anytime_rollout(engine, codec, [codec.encode("Q0<think>\n")], [["1"]], plan, params, ContainsVerifier())
    assert engine.calls[1].counts == (1, 1, 1, 1, 28)
    assert batch.scores().shape == (1, 1, 32, 1)
    assert batch.thinkings[0][0].cuts == [2, 4, 6, 8] + [9] * 28


def test_params_from_config():
    cfg = RolloutConfig(
        n=3, n_summary=2, summary_max_tokens=50, temperature=0.7, top_p=0.9, cut_marker="..", answer_delimiter="\nA:"
    )
    params = RolloutParams.from_config(cfg, seed=5)
    assert params == RolloutParams(
        3, 2, 0.7, 0.9, 5, AnytimeProtocol(cut_marker="..", answer_delimiter="\nA:", summary_max_tokens=50)
    )


def test_mismatched_ground_truths(codec):
    plan = BudgetPlan.build(12, budgets=[4, 8, 12])
    with pytest.raises(ValueError, match="1 prompts but 2 ground-truth lists"):
        anytime_rollout(make_engine(codec), codec, [[1]], [["1"], ["2"]], plan, RolloutParams(1, 1), ContainsVerifier())


def test_rollout_with_a_real_model(codec, tiny_model):
    """Smoke test through TransformersEngine: shapes, cuts and the summary cap hold for sampled text."""
    from anytime_reasoner.engine.hf import TransformersEngine

    engine = TransformersEngine(tiny_model, pad_token_id=codec.pad_id)
    plan = BudgetPlan.build(8, budgets=[4, 8], prior="uniform")
    params = RolloutParams(n_thinking=2, n_summary=2, temperature=1.0, seed=0, protocol=AnytimeProtocol(summary_max_tokens=3))
    prompts = [codec.encode("Q0<think>\n"), codec.encode("Q12<think>\n")]
    batch = anytime_rollout(engine, codec, prompts, [["1"], ["2"]], plan, params, ContainsVerifier())
    assert batch.scores().shape == (2, 2, 2, 2)
    for row in batch.thinkings:
        for t in row:
            assert 1 <= t.length <= 8
            assert t.cuts == [t.length if (t.closed and t.length <= b) else min(b, t.length) for b in (4, 8)]
            assert all(1 <= len(s.sampled_ids) <= 3 for per_budget in t.summaries for s in per_budget)
