"""The public API (``anytime_reasoner.api``): every exported name imports, and each is the object its
layer defines (the API re-exports; it wraps nothing)."""

import importlib
import inspect

import pytest

import anytime_reasoner.api as api

# name -> the module that defines it (docs/ARCHITECTURE.md)
HOMES = {
    "TrainConfig": "anytime_reasoner.config.train",
    "EvalConfig": "anytime_reasoner.config.eval",
    "AnytimeProtocol": "anytime_reasoner.protocol",
    "TokenizerCodec": "anytime_reasoner.data.codec",
    "GenerationEngine": "anytime_reasoner.engine.base",
    "anytime_rollout": "anytime_reasoner.rollout.anytime",
    "thinking_advantages": "anytime_reasoner.algo.advantages",
    "summary_advantages": "anytime_reasoner.algo.advantages",
    "ppo_policy_loss": "anytime_reasoner.algo.losses",
    "MathVerifier": "anytime_reasoner.rewards.grader",
    "train": "anytime_reasoner.train.build",
    "evaluate": "anytime_reasoner.eval.runner",
    "evaluate_model": "anytime_reasoner.eval.cli",
    "answers_at_budgets": "anytime_reasoner.eval.ask",
}


@pytest.mark.parametrize("name", api.__all__)
def test_every_public_name_imports(name):
    obj = getattr(api, name)
    assert obj is not None
    exec(f"from anytime_reasoner.api import {name}", {})  # the spelling users write


def test_all_lists_exactly_the_public_names():
    public = {n for n, v in vars(api).items() if not n.startswith("_") and not inspect.ismodule(v) and n != "annotations"}
    assert sorted(api.__all__) == sorted(public)
    assert len(api.__all__) == len(set(api.__all__))


@pytest.mark.parametrize("name", sorted(HOMES))
def test_names_are_their_layers_objects(name):
    home = importlib.import_module(HOMES[name])
    assert getattr(api, name) is getattr(home, name)


def test_importing_the_package_loads_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, anytime_reasoner, anytime_reasoner.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # the CLI parses and validates before torch loads
