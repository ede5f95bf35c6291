"""LoRA specialists of the pool's generalist (beside ``experiments``, one level): what they learn
(``examples``), their settings (``settings``), training (``lora``), the finished adapter
(``card``) and the paired check against the generalist (``paired_check``), on the
specialization half of the benchmarks only (docs/specialists.md). ``specialize.py`` and
``specialist_eval.py`` here are the thin documented scripts."""
