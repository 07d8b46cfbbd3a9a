"""The anytime rollout: one thinking per sample, cut at every budget of the plan, A summaries per cut
after the cut protocol's forced text, graded (``anytime``), into the typed tree ``types.RolloutBatch``
that training and evaluation both consume (docs/ARCHITECTURE.md)."""
