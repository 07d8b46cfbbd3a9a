"""engine/prefix_cache.py: a call after a ``keep_cache`` call takes the head of each prefix from the
held cache and runs only the rest, and samples what re-encoding the whole prefix samples."""

import pytest
import torch

from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine, plan_held_chunks
from anytime_reasoner.engine.prefix_cache import HeldIndex, Hit

pytestmark = pytest.mark.usefixtures("single_thread")

PAD = 256  # tests/conftest.py: <pad>
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21], [30, 31, 32]]  # left-padded to 7 in the thinking call
INSERTED = (40, 41, 42)  # stands for the cut text


def _thinkings(engine, keep_cache):
    params = SamplingParams(max_new_tokens=20, temperature=1.0, stop_token_ids=(7,), seed=1, keep_cache=keep_cache)
    return engine.sample(PROMPTS, 2, params)  # [3][2]


def _summary_prefixes(thinkings):
    """Every thinking cut at 5 tokens and whole (the whole one ends on the last token sampled, which
    never ran through the model), each followed by the inserted text; plus one prompt cut alone."""
    prefixes = []
    for prompt, row in zip(PROMPTS, thinkings, strict=True):
        for c in row:
            for cut in (5, len(c.token_ids)):
                prefixes.append(list(prompt) + list(c.token_ids[:cut]) + list(INSERTED))
    prefixes.append(list(PROMPTS[1]) + list(INSERTED))
    return prefixes


@pytest.mark.parametrize("rows", [128, 2])  # one held decoding call; three (a chunk's prefixes then come from several)
@pytest.mark.parametrize("in_place", [True, False])  # heads read in place (engine/held_attention.py); forked row by row
def test_summaries_from_the_held_cache_equal_reencoded_ones(tiny_model, rows, in_place):
    """Greedy summaries after 13 prefixes: the same tokens and log-probs (1e-4: the held keys were
    computed a token at a time, the re-encoded ones in one forward) as a fresh engine re-encoding
    every prefix; only the rests ran through the model (the held head of each is counted as reused)."""
    held_engine = TransformersEngine(tiny_model, PAD, max_batch_rows=rows, held_attention=in_place)
    fresh_engine = TransformersEngine(tiny_model, PAD)
    thinkings = _thinkings(held_engine, keep_cache=True)
    assert held_engine._held  # kept for the next call
    prefixes = _summary_prefixes(thinkings)
    params = SamplingParams(max_new_tokens=8, temperature=0.0, logprobs=True)
    before = held_engine.stats.prefill_tokens
    forked = held_engine.sample(prefixes, 1, params)
    reencoded = fresh_engine.sample(prefixes, 1, params)
    assert not held_engine._held  # consumed
    for a, b in zip(forked, reencoded, strict=True):
        assert a[0].token_ids == b[0].token_ids
        assert torch.allclose(torch.tensor(a[0].logprobs), torch.tensor(b[0].logprobs), atol=1e-4)
    # reused: each prefix's prompt and its thinking tokens, except the last token of its decoding
    # call's longest thinking (sampled at the last step, it never ran through the model); the prompt alone
    # keeps itself (the inserted text is not what was sampled after it: checked below)
    held = [max(len(c.token_ids) for c in row) - 1 for row in thinkings]  # per call: 6 rows, or a prompt's 2
    if rows == 128:
        held = [max(held)] * 3
    reused = sum(
        2 * len(p) + min(5, len(c.token_ids)) + min(len(c.token_ids), h)
        for p, row, h in zip(PROMPTS, thinkings, held, strict=True)
        for c in row
    )
    assert all(c.token_ids[0] != INSERTED[0] for c in thinkings[1])
    reused += len(PROMPTS[1])
    assert held_engine.stats.reused_prefix_tokens == reused
    total = sum(len(p) for p in prefixes)  # what re-encoding runs: the prefill, then each last token
    assert held_engine.stats.prefill_tokens - before == total - reused
    assert held_engine.stats.held_rows == (len(prefixes) if in_place else 0)


@pytest.mark.parametrize("in_place", [True, False])
def test_summaries_that_stop_leave_the_batch_and_equal_reencoded_ones(tiny_model, in_place):
    """Greedy summaries with stop tokens (the 2nd token of one re-encoded summary, the 3rd of another),
    3 samples per prefix, rows leaving the batch as soon as one has stopped: the same tokens and
    log-probs (1e-4) as re-encoding, rows ending on a stop before the cap."""
    held_engine = TransformersEngine(tiny_model, PAD, held_attention=in_place, shrink_at=0.01)
    prefixes = _summary_prefixes(_thinkings(held_engine, keep_cache=True))
    fresh = TransformersEngine(tiny_model, PAD)
    free = fresh.sample(prefixes, 1, SamplingParams(max_new_tokens=8, temperature=0.0))
    stops = (free[0][0].token_ids[1], free[5][0].token_ids[2])
    params = SamplingParams(max_new_tokens=8, temperature=0.0, stop_token_ids=stops, logprobs=True)
    held, reencoded = held_engine.sample(prefixes, 3, params), fresh.sample(prefixes, 3, params)
    stopped = 0
    for a_row, b_row in zip(held, reencoded, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
            stopped += a.finish_reason == "stop" and len(a.token_ids) < 8
    assert stopped >= 6  # rows 0 and 5 stop early, 3 samples each
    assert held_engine.stats.held_rows == (3 * len(prefixes) if in_place else 0)


def test_sampled_summaries_follow_the_same_distribution(tiny_model):
    """Seeded sampling at temperature 1: the log-prob each engine records for its sampled tokens is
    that of the same model, so re-scoring the forked engine's samples by a plain forward agrees (1e-4)."""
    engine = TransformersEngine(tiny_model, PAD)
    prefixes = _summary_prefixes(_thinkings(engine, keep_cache=True))
    sampled = engine.sample(prefixes, 3, SamplingParams(max_new_tokens=6, temperature=1.0, seed=4, logprobs=True))
    for prefix, row in zip(prefixes, sampled, strict=True):
        for c in row:
            full = torch.tensor([prefix + list(c.token_ids)])
            with torch.no_grad():
                logits = tiny_model(input_ids=full).logits[0, len(prefix) - 1 : -1]  # [n, V]
            want = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
            assert torch.allclose(torch.tensor(c.logprobs), want, atol=1e-4)
    assert engine.stats.reused_prefix_tokens > 0  # the samples did come from the held cache


def test_held_cache_is_consumed_and_misses_are_prefilled(tiny_model):
    """A call without ``keep_cache`` holds nothing; a call after a held one whose prefixes share no
    prompt re-encodes them (and nothing stays held after it)."""
    engine = TransformersEngine(tiny_model, PAD)
    _thinkings(engine, keep_cache=False)
    assert not engine._held
    _thinkings(engine, keep_cache=True)
    engine.sample([[60, 61, 62]], 1, SamplingParams(max_new_tokens=3, temperature=0.0))
    assert engine.stats.reused_prefix_tokens == 0 and not engine._held


def test_index_picks_the_row_with_the_longest_common_head(tiny_model):
    """Two samples of one prompt: a prefix continuing the second sample's first 4 tokens is found in
    that row, with 4 + the prompt's tokens reused; a prefix equal to a held prompt keeps 1 token to run."""
    engine = TransformersEngine(tiny_model, PAD)
    row = _thinkings(engine, keep_cache=True)[0]
    held = HeldIndex(engine._held)
    second = list(PROMPTS[0]) + list(row[1].token_ids[:4]) + [250]
    hit = held.find(second)
    assert hit is not None
    assert held.held[hit.source].ids[hit.row, 7:11].tolist() == list(row[1].token_ids[:4])
    assert hit.reused == 7 + 4 and hit.kept == 0 + 11  # prompt 0 is the widest: no left padding
    alone = held.find(list(PROMPTS[1]))
    assert alone is None  # a query no longer than a held prompt has nothing to fork
    short = held.find(list(PROMPTS[1]) + [250])
    assert short is not None and short.reused == 2 and short.kept == 5 + 2  # 7 - 2 = 5 positions of left padding


def test_held_cache_stays_within_its_byte_cap(tiny_model):
    """One decoding call per prompt (2 rows a call): with room for two calls' caches the third is
    dropped, its prefixes are encoded again, and the summaries are still those of re-encoding; with
    no room nothing is held."""
    probe = TransformersEngine(tiny_model, PAD, max_batch_rows=2)
    _thinkings(probe, keep_cache=True)
    sizes = [h.nbytes for h in probe._held]  # [3]: each call's reserved keys and values
    assert len(sizes) == 3 and all(s > 0 for s in sizes)
    capped = TransformersEngine(tiny_model, PAD, max_batch_rows=2, max_held_bytes=sizes[0] + sizes[1])
    thinkings = _thinkings(capped, keep_cache=True)
    assert [h.prefixes for h in capped._held] == [h.prefixes for h in probe._held[:2]]
    prefixes = _summary_prefixes(thinkings)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    forked = capped.sample(prefixes, 1, greedy)
    reencoded = TransformersEngine(tiny_model, PAD).sample(prefixes, 1, greedy)
    assert [row[0].token_ids for row in forked] == [row[0].token_ids for row in reencoded]
    assert capped.stats.reused_prefix_tokens > 0
    nothing = TransformersEngine(tiny_model, PAD, max_held_bytes=0)
    _thinkings(nothing, keep_cache=True)
    assert not nothing._held


def test_held_chunks_keep_a_thinking_whole():
    """Five prefixes reading three held rows (source, row): (0, 1) by prefixes 0 and 3, (0, 0) by 1,
    (1, 0) by 2 and 4 (prefix 4 with no rows). Chunks take whole thinkings in (source, row) order:
    (0, 0) 2 rows, (0, 1) 2 + 3 = 5 rows, (1, 0) 4 rows. At 7 rows a chunk: [(0, 0), (0, 1)] (7),
    then [(1, 0)]; at 6 rows: each alone (2 + 5 > 6; 5 + 4 > 6). With 10 held scores a query and a cap
    of 80 scores: (0, 0) 2·10 = 20, (0, 1) 50 → 70 ≤ 80 together; (1, 0) 40 apart."""
    hits = [Hit(0, 1, 3, 3), Hit(0, 0, 3, 3), Hit(1, 0, 3, 3), Hit(0, 1, 4, 4), Hit(1, 0, 2, 2)]
    counts = [2, 2, 4, 3, 0]
    assert plan_held_chunks(hits, counts, [10] * 5, max_rows=7, max_scores=10**6) == [[1, 0, 3], [2]]
    assert plan_held_chunks(hits, counts, [10] * 5, max_rows=6, max_scores=10**6) == [[1], [0, 3], [2]]
    assert plan_held_chunks(hits, counts, [10] * 5, max_rows=100, max_scores=80) == [[1, 0, 3], [2]]
    assert plan_held_chunks(hits, counts, [10] * 5, max_rows=100, max_scores=60) == [[1], [0, 3], [2]]


def test_equal_heads_go_to_the_row_found_least(tiny_model):
    """Two greedy samples of one prompt (the same tokens): a prefix sharing their first 3 tokens with
    both is given to each in turn (the row found fewer times so far), not always to the first."""
    engine = TransformersEngine(tiny_model, PAD)
    row = engine.sample([PROMPTS[0]], 2, SamplingParams(max_new_tokens=6, temperature=0.0, keep_cache=True))[0]
    assert row[0].token_ids == row[1].token_ids  # greedy: the two samples are the same
    index = HeldIndex(engine._held)
    query = list(PROMPTS[0]) + list(row[0].token_ids[:3]) + [250]
    found = [index.find(query) for _ in range(4)]
    assert all(h is not None and h.reused == 7 + 3 for h in found)
    assert [h.row for h in found if h is not None] == [0, 1, 0, 1]
