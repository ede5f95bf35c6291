"""LoRA specialists of the pool's generalist: training (``specialize.py``) and measurement
(``specialist_eval.py``), on the specialization half of the benchmarks only (docs/specialists.md)."""
