"""Evaluation: one-pass anytime evaluation (``runner``), metrics, reports, plots, ``ask``, the embedded
task's anytime curve (``curve``), and the ``eval``/``ask``/``plot`` commands with their preflight
checks. Independent of ``train`` (docs/ARCHITECTURE.md)."""
