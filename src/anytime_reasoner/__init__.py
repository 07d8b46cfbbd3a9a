"""anytime-reasoner: train and evaluate reasoning LLMs for anytime reasoning (AnytimeReasoner, BRPO).

The package is a stack of layers (docs/ARCHITECTURE.md), from the bottom: ``protocol``, ``errors``,
``seeding`` → ``algo`` (pure tensors) → ``config`` → ``data`` → ``tasks`` → ``engine``, ``rewards`` →
``models``, ``rollout`` → ``train``, ``eval`` → ``demo`` → ``compare`` → ``cli``, ``api``. Script
against :mod:`anytime_reasoner.api`; importing this package alone loads nothing.
"""

__version__ = "0.1.0"
