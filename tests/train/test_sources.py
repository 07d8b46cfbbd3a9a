"""FiniteSource reads the training set in whole passes; SyntheticSource is an unbounded stream."""

from __future__ import annotations

import random

import pytest

from anytime_reasoner.data.schema import Example
from anytime_reasoner.train.sources import FiniteSource, SyntheticSource


def _rows(n: int) -> list[Example]:
    return [Example.from_problem(f"q{i}", "test", f"problem {i}", (str(i),)) for i in range(n)]


def _ids(batch: list[Example]) -> list[str]:
    return [e.id for e in batch]


def _perm(key: str, n: int) -> list[str]:
    order = list(range(n))
    random.Random(key).shuffle(order)
    return [f"q{i}" for i in order]


def test_one_pass_visits_every_row_once():
    source = FiniteSource(_rows(10), seed=0)
    # n=10, size=4: steps_per_epoch = ceil(10/4) = 3; steps 1,2,3 hold 4, 4, 10-2*4 = 2 rows
    batches = [_ids(source.batch(t, 4)) for t in (1, 2, 3)]
    assert [len(b) for b in batches] == [4, 4, 2]
    seen = [i for b in batches for i in b]
    assert sorted(seen) == sorted(f"q{i}" for i in range(10))  # 4+4+2 = 10, each id once
    assert len(set(seen)) == 10
    assert source.steps_per_epoch(4) == 3
    assert [source.epoch_of(t, 4) for t in (1, 2, 3, 4, 6, 7)] == [0, 0, 0, 1, 1, 2]


def test_step_one_is_the_first_slice_of_pass_zero():
    source = FiniteSource(_rows(10), seed=0)
    perm0 = _perm("0:0", 10)  # pass 0 of seed 0
    # step 1 -> epoch (1-1)//3 = 0, position (1-1)%3 = 0 -> perm0[0:4]
    assert _ids(source.batch(1, 4)) == perm0[0:4]
    # step 2 -> position 1 -> perm0[4:8]; step 3 -> position 2 -> perm0[8:12] = perm0[8:10]
    assert _ids(source.batch(2, 4)) == perm0[4:8]
    assert _ids(source.batch(3, 4)) == perm0[8:10]


def test_next_pass_is_a_new_order():
    source = FiniteSource(_rows(10), seed=0)
    perm0, perm1 = _perm("0:0", 10), _perm("0:1", 10)
    assert perm0 != perm1
    # step 4 -> epoch (4-1)//3 = 1, position (4-1)%3 = 0 -> perm1[0:4]
    assert _ids(source.batch(4, 4)) == perm1[0:4]
    # steps 4,5,6 are pass 1: again every id exactly once (4+4+2 = 10)
    pass1 = [i for t in (4, 5, 6) for i in _ids(source.batch(t, 4))]
    assert pass1 == perm1
    assert pass1 != [i for t in (1, 2, 3) for i in _ids(source.batch(t, 4))]


def test_batches_are_deterministic_in_seed_and_step():
    a, b = FiniteSource(_rows(10), seed=7), FiniteSource(_rows(10), seed=7)
    for t in (1, 3, 5, 100):
        assert _ids(a.batch(t, 4)) == _ids(b.batch(t, 4))
    # step 5 -> epoch (5-1)//3 = 1, position (5-1)%3 = 1 -> perm("7:1")[4:8]
    assert _ids(a.batch(5, 4)) == _perm("7:1", 10)[4:8]
    assert _ids(FiniteSource(_rows(10), seed=8).batch(1, 4)) == _perm("8:0", 10)[0:4]


def test_size_larger_than_the_set_is_one_pass_per_step():
    source = FiniteSource(_rows(3), seed=0)
    # n=3, size=5: steps_per_epoch = ceil(3/5) = 1, so step t is the whole pass t-1 (3 rows)
    assert source.steps_per_epoch(5) == 1
    assert _ids(source.batch(1, 5)) == _perm("0:0", 3)
    assert _ids(source.batch(2, 5)) == _perm("0:1", 3)
    assert source.epoch_of(2, 5) == 1


def test_size_dividing_the_set_gives_full_batches():
    source = FiniteSource(_rows(8), seed=0)
    # n=8, size=4: steps_per_epoch = 8/4 = 2, both batches full; step 3 starts pass 1
    assert [len(source.batch(t, 4)) for t in (1, 2, 3)] == [4, 4, 4]
    assert _ids(source.batch(3, 4)) == _perm("0:1", 8)[0:4]


@pytest.mark.parametrize("step", [0, -1])
def test_step_counts_from_one(step):
    with pytest.raises(ValueError, match="step counts from 1"):
        FiniteSource(_rows(4)).batch(step, 2)


def test_bad_size_and_empty_set_are_refused():
    with pytest.raises(ValueError, match="batch size"):
        FiniteSource(_rows(4)).batch(1, 0)
    with pytest.raises(ValueError, match="empty"):
        FiniteSource([])


def test_synthetic_source_ignores_epochs():
    source = SyntheticSource(seed=0)
    first = source.batch(1, 3)
    assert _ids(first) == ["train-1-0", "train-1-1", "train-1-2"]
    assert [e.prompt for e in source.batch(1, 3)] == [e.prompt for e in first]  # deterministic
    assert [e.prompt for e in source.batch(2, 3)] != [e.prompt for e in first]  # fresh each step
    assert all(e.ground_truths for e in first)


def test_refills_are_deterministic_per_step_and_round_and_leave_the_batches_alone():
    source = FiniteSource(_rows(10), seed=0)
    before = [_ids(source.batch(t, 4)) for t in (1, 2, 3)]
    first = _ids(source.refill(1, 1, 4))
    assert first == _ids(source.refill(1, 1, 4)) and len(set(first)) == 4  # a sample without replacement
    assert first != _ids(source.refill(1, 2, 4)) or first != _ids(source.refill(2, 1, 4))
    assert _ids(source.refill(1, 1, 20)) and len(source.refill(1, 1, 20)) == 10  # at most n rows
    assert [_ids(source.batch(t, 4)) for t in (1, 2, 3)] == before  # refills do not move the passes
    synthetic = SyntheticSource(seed=0)
    refill = [e.prompt for e in synthetic.refill(3, 1, 4)]
    assert refill == [e.prompt for e in synthetic.refill(3, 1, 4)]
    assert refill != [e.prompt for e in synthetic.batch(3, 4)]
