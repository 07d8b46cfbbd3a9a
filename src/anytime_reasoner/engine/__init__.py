"""Generation backends behind one protocol (``base.GenerationEngine.sample``): transformers
(``hf``), vLLM (``vllm``) and a scripted engine for tests. Which one a run uses, and its checks, is
``models.engines``' business (docs/ARCHITECTURE.md)."""
