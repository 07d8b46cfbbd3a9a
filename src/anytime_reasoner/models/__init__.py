"""Loading a model, its tokenizer and its generation engine, with the checks that run first.

- :mod:`~anytime_reasoner.models.checks`: the model's ``config.json`` (a causal LM?) and whether the
  longest sequence of a run fits its context: no weights loaded;
- :mod:`~anytime_reasoner.models.loading`: device, tokenizer, causal LM (safetensors, no remote code);
- :mod:`~anytime_reasoner.models.engines`: the generation engine ``engine.backend`` names.

This layer sits above ``engine/``, ``data/``, ``tasks/`` and ``config`` and below ``train/`` and
``eval/`` (docs/ARCHITECTURE.md); it takes the attention implementation as an argument rather than
reaching into the trainer for it. Torch and transformers are imported inside the functions that
need them, so the CLI's preflight checks can import this package before either loads.
"""
