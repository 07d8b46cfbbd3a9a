"""The package's import graph, counting every import: module level, ``if TYPE_CHECKING:`` and
function-local alike (docs/ARCHITECTURE.md).

Prints the number of import cycles among the modules of ``src/anytime_reasoner`` (strongly connected
components of more than one module) and every function-local import, and exits 1 when there is a
cycle, or a function-local import that is not of a heavy or optional dependency named in
:data:`DEFERRED` (each with a comment on its line or the line above saying why it waits).
``lint-imports`` checks the layers; this script is the cycle count and the list of deferred imports.

    python scripts/import_graph.py [--root src/anytime_reasoner] [--edges]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# What may be imported inside a function: heavy or optional third-party packages, loaded on use so
# that `--help`, configuration errors and the preflight checks stay fast; and the grader's worker
# module, whose math-verify and sympy load only in the sandboxed grading processes.
DEFERRED = (
    "torch",
    "transformers",
    "vllm",
    "peft",
    "matplotlib",
    "pyarrow",
    "datasets",
    "wandb",
    "anytime_reasoner.rewards.equivalence",
)


@dataclass(frozen=True)
class Import:
    """One import statement."""

    module: str  # the importing module
    line: int
    package: str  # what it imports from: the module of ``import m``, ``pkg`` of ``from pkg import …``
    targets: tuple[str, ...]  # what it imports, absolute (``pkg.name`` for ``from pkg import name``)
    local: bool  # inside a function
    commented: bool  # a comment on its line or the line above


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    module = module_name(path, root)
    is_package = path.name == "__init__.py"

    def commented(line: int) -> bool:
        return "#" in lines[line - 1] or (line >= 2 and "#" in lines[line - 2])

    def walk(node: ast.AST, local: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, child.lineno, alias.name, (alias.name,), local, commented(child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, module, is_package)
                targets = tuple(f"{base}.{alias.name}" for alias in child.names)  # a name may be a submodule
                yield Import(module, child.lineno, base, targets, local, commented(child.lineno))
            yield from walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    yield from walk(ast.parse(source), False)


def resolve(target: str, modules: set[str]) -> str | None:
    """The package module ``target`` names (the longest existing prefix), None outside the package."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def analyse(root: Path) -> tuple[dict[str, set[str]], list[Import]]:
    """``(edges between package modules, every function-local import)``."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    local: list[Import] = []
    for path in files:
        for imp in imports_of(path, root):
            for name in imp.targets:
                target = resolve(name, modules)
                if target is not None and target != imp.module:
                    edges[imp.module].add(target)
            if imp.local:
                local.append(imp)
    return edges, local


def deferred_ok(imp: Import) -> bool:
    allowed = any(imp.package == d or imp.package.startswith(d + ".") for d in DEFERRED)
    return allowed and imp.commented


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "src" / "anytime_reasoner"))
    parser.add_argument("--edges", action="store_true", help="also print every module's imports of the package")
    args = parser.parse_args(argv)
    edges, local = analyse(Path(args.root))
    found = cycles(edges)
    print(f"modules: {len(edges)}, imports between them: {sum(len(v) for v in edges.values())}")
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  cycle: " + " <-> ".join(component))
    bad = [imp for imp in local if not deferred_ok(imp)]
    print(f"function-local imports: {len(local)} (heavy or optional dependencies: {len(local) - len(bad)})")
    for imp in local:
        mark = "  " if deferred_ok(imp) else "! "
        print(f"  {mark}{imp.module}:{imp.line} {imp.package}")
    if bad:
        print(f"{len(bad)} function-local import(s) not allowed (see DEFERRED) or without a comment saying why", file=sys.stderr)
    if args.edges:
        for module in sorted(edges):
            print(f"{module} -> {', '.join(sorted(edges[module])) or '-'}")
    return 1 if found or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
