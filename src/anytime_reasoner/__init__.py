"""anytime-reasoner: train and evaluate reasoning LLMs for anytime reasoning (AnytimeReasoner, BRPO).

Layout: ``algo`` (budgets, advantages, losses: pure tensors), ``engine`` (generation backends),
``rollout`` (the anytime rollout tree and packing), ``rewards`` (math grading), ``train``,
``eval``, ``data``, ``tasks`` (the embedded synthetic task), ``cli``.
"""

__version__ = "0.1.0"
