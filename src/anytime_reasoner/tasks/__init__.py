"""The embedded default: a synthetic task, a local tokenizer and a tiny bootstrapped base model.

``synthetic`` (problems and worked solutions), ``tokenizer`` (byte-level BPE, chat template),
``tiny_model`` (a ~0.5M-parameter Qwen2), ``bootstrap`` (SFT and the cached ``ensure_base_model``),
``curve`` (a model's anytime curve on synthetic problems, through ``eval.runner``). Heavy modules
are imported on use, not here.
"""
