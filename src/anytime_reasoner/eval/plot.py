"""``anytime-reasoner plot``: overlay accuracy-vs-budget curves of several results files in one PNG.

One panel per benchmark plus the average (the average first, as in the seed's Figure 1), one curve
per input file (or per model of a demo file), accuracy in percent against the token budget.

Accepted shapes:
- ``eval``'s ``results.json``: ``{"model", "budgets", "benchmarks": {name: {"accuracy": [...]}},
  "average": {"accuracy": [...]}}`` → one curve per panel, labelled by the model (or ``labels=``);
- the demo's ``{"budgets", "models": {name: {"accuracy": [...], "mean": m}}}`` → one curve per
  model in the panel named by the file's ``benchmark`` (or ``task``) key, else ``demo``.
Accuracies are fractions; a file whose values exceed 1 is taken to be in percent already.
Matplotlib runs with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anytime_reasoner.config import PlotConfig
from anytime_reasoner.errors import UserError

AVERAGE = "average"
TITLES = {
    AVERAGE: "Average",
    "aime": "AIME 2024",
    "amc": "AMC 2022",
    "math500": "MATH500",
    "minerva": "Minerva",
    "olympiad_bench": "OlympiadBench",
}
MARKERS = ("v", "o", "x", "s", "^", "D", "*", "P", "<", ">")


def line_style(index: int) -> dict[str, Any]:
    """Colour, marker and line style of the ``index``-th curve: the 10 colours, then dashed, so
    up to 20 curves stay apart."""
    return {
        "color": f"C{index % 10}",
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": "-" if index % 20 < 10 else "--",
    }


@dataclass(frozen=True)
class Curve:
    panel: str
    label: str
    budgets: tuple[int, ...]
    percent: tuple[float, ...]


def _load(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"inputs: {path}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"inputs: {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("budgets"), list):
        raise UserError(f"inputs: {path}: expected a results object with 'budgets' and 'benchmarks' or 'models'")
    return data


def _series(path: str, where: str, budgets: list[Any], block: Any) -> list[float]:
    acc = block.get("accuracy") if isinstance(block, dict) else None
    if not isinstance(acc, list) or len(acc) != len(budgets) or not all(isinstance(a, (int, float)) for a in acc):
        raise UserError(f"inputs: {path}: {where}.accuracy must be a list of {len(budgets)} numbers (one per budget)")
    return [float(a) for a in acc]


def curves_of(path: str, label: str | None, several_files: bool) -> list[Curve]:
    """The curves one results file contributes."""
    data = _load(path)
    budgets = data["budgets"]
    series: list[tuple[str, str, list[float]]] = []  # (panel, label, accuracy)
    if isinstance(data.get("benchmarks"), dict):
        name = label or Path(str(data.get("model") or path)).name or Path(path).stem
        for bench, block in data["benchmarks"].items():
            series.append((bench, name, _series(path, f"benchmarks.{bench}", budgets, block)))
        if "average" in data:
            series.insert(0, (AVERAGE, name, _series(path, "average", budgets, data["average"])))
    elif isinstance(data.get("models"), dict):
        panel = str(data.get("benchmark") or data.get("task") or "demo")
        prefix = f"{label or Path(path).stem}: " if several_files else (f"{label}: " if label else "")
        for model, block in data["models"].items():
            series.append((panel, prefix + model, _series(path, f"models.{model}", budgets, block)))
    else:
        raise UserError(f"inputs: {path}: expected 'benchmarks' (eval results) or 'models' (demo results)")
    scale = 1.0 if any(a > 1.0 for _, _, acc in series for a in acc) else 100.0
    return [Curve(p, name, tuple(int(b) for b in budgets), tuple(scale * a for a in acc)) for p, name, acc in series]


def panel_order(curves: Sequence[Curve]) -> list[str]:
    """The average first, then panels in the order they first appear."""
    seen: list[str] = []
    for c in curves:
        if c.panel not in seen:
            seen.append(c.panel)
    return sorted(seen, key=lambda p: p != AVERAGE)


CROWDED = 6  # more curves than this: the legend goes outside the axes


def _legend(ax: Any, outside: bool, inside: bool) -> None:
    if outside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    elif inside:
        ax.legend(loc="lower right", fontsize=8)


def draw(curves: Sequence[Curve], out: str | Path, title: str | None = None) -> Path:
    """Write the figure; one panel per benchmark, three per row."""
    import matplotlib  # heavy: matplotlib, loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib

    panels = panel_order(curves)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    labels = list(dict.fromkeys(c.label for c in curves))
    outside = len(labels) > CROWDED  # many curves: one legend right of the panels, not over them
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols + 2.4 * outside, 4.0 * nrows), squeeze=False)
    for index, panel in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        for c in (c for c in curves if c.panel == panel):
            ax.plot(
                c.budgets,
                c.percent,
                markersize=4,
                linewidth=1.6,
                label=c.label,
                **line_style(labels.index(c.label)),
            )
        ax.set_title(TITLES.get(panel, panel.replace("_", " ").upper()), fontweight="bold")
        ax.grid(alpha=0.3)
        _legend(ax, outside and index == ncols - 1, not outside)
        if index % ncols == 0:
            ax.set_ylabel("Accuracy (%)", fontweight="bold")
        if index // ncols == nrows - 1 or index + ncols >= len(panels):
            ax.set_xlabel("Token Budget", fontweight="bold")
    for index in range(len(panels), nrows * ncols):
        axes[index // ncols][index % ncols].axis("off")
    if title:
        fig.suptitle(title, fontweight="bold")
    return _save(fig, out)


def _save(fig: Any, out: str | Path) -> Path:
    """Lay out, write the PNG (parent folders made) and free the figure."""
    import matplotlib.pyplot as plt  # heavy: matplotlib

    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_steps(
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out: str | Path,
    *,
    ylabel: str,
    title: str | None = None,
    xlabel: str = "RL step",
) -> Path:
    """One line per name of ``{name: (xs, values)}``: learning curves against the RL step, or any
    other x (e.g. the thinking tokens spent)."""
    import matplotlib  # heavy: matplotlib, loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib

    outside = len(lines) > CROWDED
    fig, ax = plt.subplots(figsize=(6.4 + 2.4 * outside, 4.4))
    for index, (name, (steps, values)) in enumerate(lines.items()):
        ax.plot(steps, values, markersize=3, label=name, **line_style(index))
    ax.set_xlabel(xlabel, fontweight="bold")
    ax.set_ylabel(ylabel, fontweight="bold")
    if title:
        ax.set_title(title, fontweight="bold")
    ax.grid(alpha=0.3)
    _legend(ax, outside, not outside)
    return _save(fig, out)


def run_plot(config: PlotConfig) -> int:
    if config.labels is not None and len(config.labels) != len(config.inputs):
        raise UserError(f"labels: {len(config.labels)} labels for {len(config.inputs)} input files; give one per file")
    if not config.out.lower().endswith(".png"):
        raise UserError(f"out: {config.out!r} must end with .png")
    labels: Sequence[str | None] = config.labels or [None] * len(config.inputs)
    several = len(config.inputs) > 1
    curves: list[Curve] = []
    for number, (path, label) in enumerate(zip(config.inputs, labels, strict=False), start=1):
        taken = {(c.panel, c.label) for c in curves}
        mine = curves_of(path, label, several)
        if any((c.panel, c.label) in taken for c in mine):  # same model name in two files: tell them apart
            mine = [Curve(c.panel, f"{c.label} ({number})", c.budgets, c.percent) for c in mine]
        curves.extend(mine)
    written = draw(curves, config.out, config.title)
    print(f"wrote {written} ({len(panel_order(curves))} panels, {len(curves)} curves)")
    return 0
