"""The layers of docs/ARCHITECTURE.md hold: no import cycle among the package's modules, every
function-local import deferred for a heavy or optional dependency, and import-linter's contracts
kept — and a wrong import (``algo`` importing ``config``) breaks them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "anytime_reasoner"


def _load_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


import_graph = _load_script()


def test_the_package_has_no_cycle_and_defers_only_heavy_imports(capsys):
    assert import_graph.main(["--root", str(PACKAGE)]) == 0
    out = capsys.readouterr().out
    assert "import cycles: 0" in out


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_script_counts_every_kind_of_import(tmp_path):
    # a -> b at module level, b -> c under TYPE_CHECKING, c -> a inside a function: one 3-module cycle
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import X\n",
            "c.py": "def f():\n    from pkg import a\n\n\ndef g():\n    import torch  # heavy: torch\n",
        },
    )
    edges, local = import_graph.analyse(pkg)
    assert import_graph.cycles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert [(i.module, i.package, import_graph.deferred_ok(i)) for i in local] == [
        ("pkg.c", "pkg", False),  # the package's own module: a cycle dodged, not a heavy import
        ("pkg.c", "torch", True),
    ]
    assert import_graph.main(["--root", str(pkg)]) == 1


def test_a_deferred_import_needs_its_comment(tmp_path):
    pkg = _write(tmp_path, {"__init__.py": "", "a.py": "def f():\n    import torch\n"})
    _, local = import_graph.analyse(pkg)
    assert [import_graph.deferred_ok(i) for i in local] == [False]


LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
needs_import_linter = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None, reason="import-linter is not installed"
)


def _lint(cwd: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@needs_import_linter
def test_import_linter_contracts_are_kept():
    run = _lint(ROOT, ROOT / "src")
    assert run.returncode == 0, run.stdout[-2000:]
    assert "0 broken" in run.stdout


@needs_import_linter
def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "src" / "anytime_reasoner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    budgets = tmp_path / "src" / "anytime_reasoner" / "algo" / "budgets.py"
    budgets.write_text(budgets.read_text() + "\n\ndef _wrong():\n    from anytime_reasoner.config import TrainConfig\n")
    run = _lint(tmp_path, tmp_path / "src")
    assert run.returncode != 0
    assert "anytime_reasoner.algo is not allowed to import anytime_reasoner.config" in run.stdout
