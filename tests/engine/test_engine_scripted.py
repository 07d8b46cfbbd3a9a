"""ScriptedEngine: truncation at stop ids / the cap, per-prefix counts, call recording."""

import pytest

from anytime_reasoner.engine.base import Completion, SamplingParams
from anytime_reasoner.engine.scripted import ScriptedEngine, truncate


def test_truncate_at_stop_or_cap():
    # stop id 9 at index 2 → keep 3 tokens through it
    assert truncate([1, 2, 9, 4], 10, (9,)) == Completion((1, 2, 9), "stop")
    # cap 2 comes before the stop → 2 tokens, "length"
    assert truncate([1, 2, 9, 4], 2, (9,)) == Completion((1, 2), "length")
    # stop exactly at the last allowed token → "stop"
    assert truncate([1, 2, 9, 4], 3, (9,)) == Completion((1, 2, 9), "stop")
    # stream shorter than the cap without a stop: the script is incomplete
    with pytest.raises(ValueError, match="ends before the cap"):
        truncate([1, 2], 5, (9,))


def test_function_script_counts_and_recording():
    engine = ScriptedEngine(lambda prefix, i: [len(prefix), i, 0, 0])
    params = SamplingParams(max_new_tokens=3, stop_token_ids=(0,))
    out = engine.sample([[7, 7], [5]], [2, 0], params)
    # prefix [7,7], samples 0 and 1: [2, i, 0] stops at the first 0
    assert out == [[Completion((2, 0), "stop"), Completion((2, 1, 0), "stop")], []]
    out = engine.sample([[1, 2, 3]], 1, params)
    assert out == [[Completion((3, 0), "stop")]]
    assert [c.prefix_lengths for c in engine.calls] == [(2, 1), (3,)]
    assert [c.counts for c in engine.calls] == [(2, 0), (1,)]
    assert engine.encoded_prefixes == [(7, 7), (5,), (1, 2, 3)]
    assert engine.encoded_tokens == 2 + 1 + 3


def test_table_script_cycles_and_reports_missing_prefix():
    engine = ScriptedEngine.from_table({(1,): [[5, 9], [6, 9]]})
    params = SamplingParams(max_new_tokens=4, stop_token_ids=(9,))
    out = engine.sample([[1]], 3, params)
    assert [c.token_ids for c in out[0]] == [(5, 9), (6, 9), (5, 9)]
    with pytest.raises(KeyError, match="no script"):
        engine.sample([[2]], 1, params)


def test_sample_counts_must_match_prefixes():
    engine = ScriptedEngine(lambda prefix, i: [0])
    with pytest.raises(ValueError, match="2 sample counts given for 1 prefixes"):
        engine.sample([[1]], [1, 1], SamplingParams(max_new_tokens=1, stop_token_ids=(0,)))
