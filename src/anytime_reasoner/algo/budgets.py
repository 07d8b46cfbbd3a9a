"""Budget plans: the support b_1 < … < b_m and the prior P over it (docs/ALGORITHM.md §2).

Pure Python, no torch: configuration validation imports this before anything heavy.

Departures from the seed: any explicit increasing budget list and any explicit weight list are
accepted (the seed only had evenly spaced supports and three named priors), and evaluation grids
are written ``start:stop:step`` (``250:8000:250`` → 32 budgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PRIORS = ("base", "uniform", "linear")


class BudgetError(ValueError):
    """A budget plan or grid that cannot be used; the message names the field."""


@dataclass(frozen=True)
class BudgetPlan:
    """Budgets b_1 < … < b_m (thinking tokens) and normalized prior weights P_j (sum 1)."""

    budgets: tuple[int, ...]
    probs: tuple[float, ...]

    @property
    def max_budget(self) -> int:
        return self.budgets[-1]

    def __len__(self) -> int:
        return len(self.budgets)

    def scaled(self, fraction: float) -> BudgetPlan:
        """Every budget times ``fraction`` (rounded), the prior kept: a cap schedule's plan
        (ThinkPrune's tightening limits, E1's training budget)."""
        if fraction == 1.0:
            return self
        budgets = [max(1, round(b * fraction)) for b in self.budgets]
        return BudgetPlan(check_budgets(budgets, field="length.cap_schedule"), self.probs)

    @classmethod
    def build(
        cls,
        max_budget: int,
        n_support: int | None = None,
        budgets: Sequence[int] | None = None,
        prior: str | Sequence[float] = "uniform",
    ) -> BudgetPlan:
        """Evenly spaced ``b_j = j·max_budget/m`` unless ``budgets`` lists them explicitly."""
        if budgets is None:
            if n_support is None or n_support < 1:
                raise BudgetError(f"n_budget_support: must be an integer >= 1, got {n_support!r}")
            if max_budget < n_support:
                raise BudgetError(f"max_budget: must be >= n_budget_support ({n_support}), got {max_budget}")
            budgets = [round(j * max_budget / n_support) for j in range(1, n_support + 1)]
        budgets = check_budgets(budgets, field="budgets")
        return cls(budgets=budgets, probs=prior_weights(prior, budgets))


def check_budgets(budgets: Sequence[int], field: str = "budgets") -> tuple[int, ...]:
    """Validate a strictly increasing list of positive integer budgets."""
    values = tuple(budgets)
    if not values:
        raise BudgetError(f"{field}: must list at least one budget")
    for b in values:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise BudgetError(f"{field}: budgets must be positive integers, got {b!r}")
    for prev, cur in zip(values, values[1:], strict=False):
        if cur <= prev:
            raise BudgetError(f"{field}: budgets must be strictly increasing, got {prev} then {cur}")
    return values


def prior_weights(prior: str | Sequence[float], budgets: Sequence[int]) -> tuple[float, ...]:
    """Normalized prior over ``budgets``: base (all mass on the last), uniform, linear (∝ b_j),
    or explicit non-negative weights of the same length."""
    m = len(budgets)
    if isinstance(prior, str):
        if prior == "base":
            raw = [0.0] * (m - 1) + [1.0]
        elif prior == "uniform":
            raw = [1.0] * m
        elif prior == "linear":
            raw = [float(b) for b in budgets]
        else:
            raise BudgetError(
                f"budget_probs: unknown prior {prior!r}; allowed: {', '.join(PRIORS)} or a list of non-negative weights"
            )
    else:
        raw = [float(w) for w in prior]
        if len(raw) != m:
            raise BudgetError(f"budget_probs: {len(raw)} weights given for {m} budgets; lengths must match")
        if any(w < 0 or w != w for w in raw):
            raise BudgetError(f"budget_probs: weights must be non-negative numbers, got {raw}")
    total = sum(raw)
    if total <= 0:
        raise BudgetError("budget_probs: weights sum to zero; at least one must be positive")
    return tuple(w / total for w in raw)


def parse_grid(spec: str | int | Sequence[int], field: str = "budgets") -> tuple[int, ...]:
    """Parse an evaluation grid: ``"250:8000:250"`` (inclusive stop), ``"500,1000,2000"``,
    a single integer, or a list of integers."""
    if isinstance(spec, bool):
        raise BudgetError(f"{field}: expected a grid like 250:8000:250 or 500,1000, got {spec!r}")
    if isinstance(spec, int):
        return check_budgets([spec], field)
    if not isinstance(spec, str):
        return check_budgets(list(spec), field)
    text = spec.strip().strip("[]")
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] < 1:
                raise ValueError
            start, stop, step = parts
            values = list(range(start, stop + 1, step))
        else:
            values = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise BudgetError(
            f"{field}: expected start:stop:step (e.g. 250:8000:250) or a comma list (e.g. 500,1000), got {spec!r}"
        ) from None
    return check_budgets(values, field)
