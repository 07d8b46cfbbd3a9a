"""The embedded default: a synthetic task, a local tokenizer and a tiny bootstrapped base model.

``synthetic`` (problems, worked solutions, their data rows), ``tokenizer`` (byte-level BPE, chat
template), ``tiny_model`` (a ~0.5M-parameter Qwen2), ``bootstrap`` (SFT and the cached
``ensure_base_model``), ``widen`` (the same model with wider heads, for vLLM's CPU kernels). A
model's anytime curve on these problems is ``eval.curve``. Heavy modules are imported on use, not here.
"""
