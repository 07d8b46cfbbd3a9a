"""Data: one row schema (``schema.Example``), sources and readers, row validation, the tokenizer facts
of a model (``codec.TokenizerCodec``), prompts in its chat template (``prompts``), and the ``data``
command. Sits above ``config`` and below ``tasks`` (docs/ARCHITECTURE.md)."""
