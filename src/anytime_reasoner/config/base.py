"""The pieces every configuration schema is built from: the strict base model, the one-line
:class:`ConfigError`, and the field parsers shared by several commands (comma lists, budget grids,
budget priors, cap schedules, budget sentences, the cut protocol's keys).

Only pydantic and the package's bottom layer (``errors``, ``protocol``) and ``algo.budgets`` are
imported, so the CLI validates before torch is loaded.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from anytime_reasoner import protocol as _protocol
from anytime_reasoner.algo.budgets import PRIORS, BudgetError, parse_grid


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the key and what is allowed."""


class StrictModel(BaseModel):
    """A configuration section: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{dotted key: leaf value}`` (``{"rollout": {"n": 8}}`` → ``{"rollout.n": 8}``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def split_list(value: Any) -> Any:
    """Let ``key=a,b,c`` on the command line fill a list field."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return [p.strip() for p in text.split(",") if p.strip()]
    return value


def grid_field(value: Any, field: str, optional: bool = False) -> Any:
    """A budget grid (``250:8000:250``, ``500,1000``, a list) → list of ints; the error names no field
    (pydantic prefixes the key)."""
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))):
        return None
    try:
        return list(parse_grid(value, field=field))
    except BudgetError as err:
        raise ValueError(str(err).split(": ", 1)[-1]) from None


def prior_field(value: Any) -> Any:
    """A prior name or explicit weights (``1,2,3,4``)."""
    if isinstance(value, str):
        if "," in value or value.strip().startswith("["):
            return split_list(value)
        if value not in PRIORS:
            raise ValueError(f"allowed: {', '.join(PRIORS)}, or a list of non-negative weights (e.g. 1,2,3,4)")
    return value


def protocol_field(name: str, **constraints: Any) -> Any:
    """A config key spelling an :class:`AnytimeProtocol` field: its default and description come
    from :mod:`anytime_reasoner.protocol`."""
    return Field(getattr(_protocol, name.upper()), description=_protocol.DESCRIPTIONS[name], **constraints)


def cap_schedule_field(value: Any) -> Any:
    """``1:1.0,13:0.75`` (or a list of pairs) → ``[[1, 1.0], [13, 0.75]]``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    items = split_list(value) if isinstance(value, str) else value
    pairs = []
    for item in items:
        if isinstance(item, str):
            step, sep, frac = item.partition(":")
            if not sep:
                raise ValueError(f"{item!r}: each entry is STEP:FRACTION, e.g. 1:1.0,13:0.75,25:0.5")
            item = [step, frac]
        try:
            pairs.append([int(item[0]), float(item[1])])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{item!r}: each entry is STEP:FRACTION, e.g. 1:1.0,13:0.75,25:0.5") from None
    steps = [p[0] for p in pairs]
    if not pairs or steps[0] != 1 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("steps must start at 1 and increase, e.g. 1:1.0,13:0.75,25:0.5")
    if any(not 0.0 < p[1] <= 1.0 for p in pairs):
        raise ValueError("each fraction must be in (0, 1]")
    return pairs


def budget_prompt_field(value: str) -> str:
    """A budget sentence: ``{n}`` (the budget) and no other field."""
    try:
        value.format(n=1)
    except (KeyError, IndexError, ValueError):
        raise ValueError("must hold {n} and no other {field}, e.g. 'Think for {n} tokens.'") from None
    if "{n}" not in value:
        raise ValueError("must hold {n}, e.g. 'Think for {n} tokens.'")
    return value
