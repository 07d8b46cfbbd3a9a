"""Building a configuration: sources merged, then validated once.

Sources, later ones winning: the model defaults → a named preset (docs/ALGORITHM.md §8) → ``--config FILE``
(YAML) → dotted ``key=value`` overrides. Any problem (unknown key, wrong type, value out of range,
inconsistent budgets) raises :class:`ConfigError` with one line naming the key and what is allowed;
an unknown key or preset also gets a did-you-mean suggestion (docs/ERRORS.md lists every case).

Only pydantic and PyYAML are imported here, so the CLI validates before torch is loaded.

The seed's full spelling of a rollout knob ``actor_rollout_ref.rollout.n_summary=4`` is accepted as an alias.

Why the dotted-override parser and merge are written here (about 40 lines) rather than taken from
OmegaConf: ``OmegaConf.from_dotlist`` reads every value as YAML 1.1, so (checked with omegaconf
2.4) ``eval budgets=1:30:1`` becomes the base-60 integer 5401, ``trainer.out=2024`` an int that the
``str`` field then rejects, and a cut marker such as ``rollout.cut_marker=...`` a YAML parse error.
Here overrides stay strings and pydantic coerces them by field type, which keeps every current
behaviour and error message (the CLI tests are the contract); ``--help`` comes from the pydantic
models either way, so OmegaConf would replace only the parser and the merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from anytime_reasoner.config.base import ConfigError
from anytime_reasoner.config.files import read_yaml
from anytime_reasoner.config.presets import PRESETS
from anytime_reasoner.errors import did_you_mean

SEED_ALIASES = {"actor_rollout_ref.rollout.": "rollout."}


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["rollout.n=8", "trainer.out=x"]`` → nested dict of strings (pydantic coerces types)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{item!r}: overrides are written key=value (e.g. rollout.n=8)")
        for old, new in SEED_ALIASES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        _set_dotted(tree, key, value)
    return tree


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(
    cls: type[ConfigT],
    *,
    preset: str | None = None,
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> ConfigT:
    """Merge defaults, preset, files and overrides into ``cls``; raise :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown {preset!r}{did_you_mean(preset, PRESETS)}; allowed: {', '.join(PRESETS)}")
        data = deep_merge(data, PRESETS[preset])
    for path in files:
        data = deep_merge(data, read_yaml(path))
    if isinstance(overrides, Mapping):
        data = deep_merge(data, overrides)
    else:
        data = deep_merge(data, parse_overrides(overrides))
    return validate(cls, data)


def validate(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_error(cls, err)) from None


def format_error(cls: type[BaseModel], err: ValidationError) -> str:
    """One line for the first problem: the dotted key, what is wrong, what is allowed."""
    first = err.errors()[0]
    # Drop pydantic's union/validator tags (e.g. "literal['a','b']", "function-after[...]").
    loc = [str(p) for p in first["loc"] if not any(c in str(p) for c in "[(")]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        allowed = _fields_at(cls, loc[:-1])
        where = f" in '{parent}'" if parent else ""
        suggestion = _suggest_key(cls, loc)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        return f"{key}: unknown key{where}{hint}; allowed: {', '.join(allowed)}"
    if first["type"] == "missing":
        return f"{key}: required, not given"
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None or repr(got) in msg else f" (got {got!r})"
    if first["type"] == "value_error" and isinstance(got, dict):
        # A cross-field check of a whole section: its message starts with the field it names.
        return f"{key}.{msg}" if key else msg
    return f"{key}: {msg}{shown}"


def _suggest_key(cls: type[BaseModel], loc: Sequence[str]) -> str | None:
    """The dotted key an unknown ``loc`` probably meant: a close sibling (``rollout.n_sumary`` →
    ``rollout.n_summary``), else the same or a close leaf name in another section (``trainer.lr``
    → ``ppo.lr``)."""
    name, parent = loc[-1], list(loc[:-1])
    near = get_close_matches(name, _fields_at(cls, parent), n=1, cutoff=0.6)
    if near:
        return ".".join([*parent, near[0]])
    leaves = _leaf_keys(cls)
    same = [k for k in leaves if k.rsplit(".", 1)[-1] == name]
    if same:
        return same[0]
    by_leaf: dict[str, str] = {}
    for k in leaves:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], k)
    close = get_close_matches(name, list(by_leaf), n=1, cutoff=0.8)
    return by_leaf[close[0]] if close else None


def _leaf_keys(model: Any, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config model (``rollout.n``, ``ppo.lr``, ...)."""
    keys: list[str] = []
    for name, field in getattr(model, "model_fields", {}).items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _leaf_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _fields_at(cls: type[BaseModel], path: Sequence[str]) -> list[str]:
    model: Any = cls
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def dump(config: BaseModel) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict of a config (for run folders and results files)."""
    return config.model_dump(mode="json")
