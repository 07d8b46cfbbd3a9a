"""Training: tree packing and attention masks (``packing``, ``masks``, ``tree_attention``), chunked
log-probs, the PPO update, the algorithm-blind trainer, processes and precision (``runtime``), FSDP2,
LoRA, weight sync to an engine, checkpoints, metric loggers, and the ``train`` command with its
preflight checks. Independent of ``eval`` (docs/ARCHITECTURE.md)."""
