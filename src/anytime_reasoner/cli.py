"""The ``anytime-reasoner`` command.

One option convention for every subcommand::

    anytime-reasoner SUBCOMMAND [PRESET] [POSITIONAL …] [--config FILE …] [key=value …] [--help]

Arguments are parsed and the configuration validated here, importing only pydantic and PyYAML;
the subcommand's module (torch, transformers, …) is imported afterwards, so ``--help`` and
configuration errors are instant. Between the two, the command's cheap checks run
(``Command.check``, each command's preflight module: output folder writable, data sources found,
model config and tokenizer usable, budgets within the model's context), so a bad input is one
line before any weights load. Exit status: 2 for a bad command line or configuration
(:class:`ConfigError`), 1 for bad input found while checking or running (:class:`UserError`);
docs/ERRORS.md lists every case.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from anytime_reasoner.config import PRESETS, ConfigError, build_config, deep_merge, parse_overrides
from anytime_reasoner.errors import UserError, did_you_mean

PROG = "anytime-reasoner"
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


@dataclass(frozen=True)
class Command:
    """A subcommand: ``run`` and ``config`` are ``module:attribute`` paths, imported lazily."""

    summary: str
    run: str
    config: str
    presets: bool = False
    positional: str | None = None  # config field that collects positional arguments
    positional_list: bool = False
    check: str | None = None  # the command's cheap preflight checks, run before ``run`` is imported


COMMANDS: dict[str, Command] = {
    "demo": Command(
        summary="the main job on CPU: bootstrap a tiny model, train GRPO and AnytimeReasoner, compare at 8+ budgets",
        run="anytime_reasoner.demo:run_demo",
        config="anytime_reasoner.config:DemoConfig",
        check="anytime_reasoner.demo:preflight_run_scale",
    ),
    "compare": Command(
        summary="presets x seeds on the embedded task from one base model: one table (mean ± std), curves, learning curves",
        run="anytime_reasoner.compare:run_compare",
        config="anytime_reasoner.config:CompareConfig",
        check="anytime_reasoner.demo:preflight_run_scale",
    ),
    "train": Command(
        summary="RL training: anytime rollout, BRPO advantages, tree-packed PPO update (presets: docs/ALGORITHM.md section 8 and "
        "docs/BASELINES.md; the embedded model runs at its own scale unless told one)",
        run="anytime_reasoner.train.build:run_train",
        config="anytime_reasoner.config:TrainConfig",
        check="anytime_reasoner.train.preflight:preflight_train",
        presets=True,
    ),
    "grade": Command(
        summary="grade model responses against ground truths (JSONL in, JSONL out)",
        run="anytime_reasoner.rewards.cli:run_grade",
        config="anytime_reasoner.config:GradeConfig",
        check="anytime_reasoner.rewards.preflight:preflight_grade",
    ),
    "data": Command(
        summary="build training/evaluation sets in one schema (JSONL, + parquet with pyarrow)",
        run="anytime_reasoner.data.build:run_data",
        config="anytime_reasoner.config:DataBuildConfig",
        check="anytime_reasoner.data.preflight:preflight_data",
        positional="sources",
        positional_list=True,
    ),
    "eval": Command(
        summary="one-pass anytime evaluation: accuracy per benchmark x budget, anytime and final scores",
        run="anytime_reasoner.eval.cli:run_eval",
        config="anytime_reasoner.config:EvalConfig",
        check="anytime_reasoner.eval.preflight:preflight_eval",
    ),
    "plot": Command(
        summary="overlay accuracy-vs-budget curves of results files into one PNG (one panel per benchmark)",
        run="anytime_reasoner.eval.plot:run_plot",
        config="anytime_reasoner.config:PlotConfig",
        check="anytime_reasoner.eval.preflight:preflight_plot",
        positional="inputs",
        positional_list=True,
    ),
    "ask": Command(
        summary="answer a question at several thinking budgets from one thinking, printing each as it is reached",
        run="anytime_reasoner.eval.ask:run_ask",
        config="anytime_reasoner.config:AskConfig",
        check="anytime_reasoner.eval.preflight:preflight_ask",
        positional="question",
    ),
    "serve": Command(
        summary="an OpenAI-compatible server with answers at every budget from one thinking, streamed, and a web page",
        run="anytime_reasoner.serve.cli:run_serve",
        config="anytime_reasoner.config:ServeConfig",
        check="anytime_reasoner.serve.preflight:preflight_serve",
    ),
    "bootstrap": Command(
        summary="rebuild the embedded base model by SFT (the package ships it) and check it against the shipped weights",
        run="anytime_reasoner.tasks.bootstrap:run_bootstrap",
        config="anytime_reasoner.config:BootstrapConfig",
        check="anytime_reasoner.tasks.bootstrap:preflight_bootstrap",
    ),
}


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        f"usage: {PROG} SUBCOMMAND [PRESET] [--config FILE] [key=value ...] [--help]",
        "",
        "subcommands:",
        *(f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        f"Run '{PROG} SUBCOMMAND --help' for its keys. Nested keys are dotted: rollout.n_summary=4.",
    ]
    return "\n".join(lines)


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """``key  (type, default)  description`` for every leaf key of a config model."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.extend(describe_fields(ann, prefix=f"{key}."))
            continue
        default = "required" if field.is_required() else f"default {field.default!r}"
        type_name = _type_name(ann)
        desc = f"  {field.description}" if field.description else ""
        lines.append(f"  {key} ({type_name}; {default}){desc}")
    return lines


def _type_name(ann: Any) -> str:
    """``Literal['a', 'b']`` → ``a|b``; other annotations by their short name."""
    if get_origin(ann) is Literal:
        return "|".join(str(a) for a in get_args(ann))
    name = getattr(ann, "__name__", None)
    return name if name and not get_args(ann) else str(ann).replace("typing.", "")


def command_help(name: str, cmd: Command) -> str:
    config_cls = _load(cmd.config)
    head = f"usage: {PROG} {name}"
    if cmd.presets:
        head += " [PRESET]"
    if cmd.positional:
        head += f" {cmd.positional.upper()}{' ...' if cmd.positional_list else ''}"
    head += " [--config FILE] [key=value ...]"
    parts = [head, "", cmd.summary]
    if cmd.presets:
        parts += ["", f"presets: {', '.join(PRESETS)}"]
    parts += ["", "keys:", *describe_fields(config_cls)]
    return "\n".join(parts)


def parse_args(name: str, cmd: Command, argv: Sequence[str]) -> BaseModel:
    """Split argv into preset, positionals, config files and overrides, then validate."""
    preset: str | None = None
    files: list[str] = []
    overrides: list[str] = []
    positionals: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config":
            if i + 1 >= len(args):
                raise ConfigError("--config: needs a file path")
            files.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif arg.startswith("-"):
            raise ConfigError(f"{arg}: unknown option; allowed: --config FILE, --help, key=value")
        elif _OVERRIDE.match(arg):
            overrides.append(arg)
        elif cmd.presets and preset is None and not positionals and arg in PRESETS:
            preset = arg
        elif cmd.positional:
            positionals.append(arg)
        elif cmd.presets and did_you_mean(arg, PRESETS):
            raise ConfigError(f"{arg!r}: unknown preset{did_you_mean(arg, PRESETS)}; allowed: {', '.join(PRESETS)}")
        else:
            allowed = f"a preset ({', '.join(PRESETS)}) or key=value" if cmd.presets else "key=value"
            raise ConfigError(f"{arg!r}: unexpected argument to '{name}'; allowed: {allowed}")
        i += 1
    extra: dict[str, Any] = {}
    if positionals:
        key = cmd.positional
        assert key is not None  # positionals are only collected for a command that names their field
        if cmd.positional_list:
            extra[key] = positionals
        elif len(positionals) == 1:
            extra[key] = positionals[0]
        else:
            raise ConfigError(f"{key}: expected one value, got {len(positionals)}")
    merged = deep_merge(parse_overrides(overrides), extra)
    return build_config(_load(cmd.config), preset=preset, files=files, overrides=merged)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        hint = did_you_mean(name, COMMANDS)
        print(f"{PROG}: error: unknown subcommand {name!r}{hint}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(command_help(name, cmd))
        return 0
    try:
        config = parse_args(name, cmd, rest)
    except ConfigError as err:
        print(f"{PROG} {name}: error: {err}", file=sys.stderr)
        return 2
    try:
        if cmd.check:
            _load(cmd.check)(config)
        result = _load(cmd.run)(config)
    except (UserError, ConfigError) as err:
        print(f"{PROG} {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
