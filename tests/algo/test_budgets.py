"""Budget plans and evaluation grids."""

import pytest

from anytime_reasoner.algo.budgets import BudgetError, BudgetPlan, parse_grid, prior_weights


def test_evenly_spaced_support_and_priors():
    # b_j = j · 8000 / 4
    assert BudgetPlan.build(8000, n_support=4, prior="base").probs == (0.0, 0.0, 0.0, 1.0)
    plan = BudgetPlan.build(8000, n_support=4, prior="linear")
    assert plan.budgets == (2000, 4000, 6000, 8000)
    # linear: 2000/20000 … → 0.1, 0.2, 0.3, 0.4
    assert plan.probs == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert BudgetPlan.build(100, n_support=3, prior="uniform").budgets == (33, 67, 100)


def test_explicit_weights_are_normalized():
    assert prior_weights([2, 6], [10, 20]) == pytest.approx((0.25, 0.75))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budgets=[10, 10]), "strictly increasing"),
        (dict(budgets=[]), "at least one"),
        (dict(budgets=[0, 5]), "positive integers"),
        (dict(budgets=[10, 20], prior=[1.0]), "1 weights given for 2 budgets"),
        (dict(budgets=[10, 20], prior=[1.0, -1.0]), "non-negative"),
        (dict(budgets=[10, 20], prior=[0.0, 0.0]), "sum to zero"),
        (dict(budgets=[10, 20], prior="cubic"), "unknown prior"),
        (dict(n_support=0), "n_budget_support"),
    ],
)
def test_bad_plans(kwargs, message):
    with pytest.raises(BudgetError, match=message):
        BudgetPlan.build(100, **kwargs)


def test_grids():
    grid = parse_grid("250:8000:250")
    # (8000 − 250)/250 + 1 = 32 budgets
    assert len(grid) == 32 and grid[0] == 250 and grid[-1] == 8000
    assert parse_grid("500,1000,2000") == (500, 1000, 2000)
    assert parse_grid(64) == (64,)
    assert parse_grid([1, 2]) == (1, 2)
    for bad in ("a:b:c", "1:10", "10:1:1", "3,2", "1:10:0"):
        with pytest.raises(BudgetError, match="budgets"):
            parse_grid(bad)
