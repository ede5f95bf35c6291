"""Command lines of the training tools, apart from their algorithms.

Each entry point parses its flags, builds the run's objects with ``context.load_run_context``
(config, pool, encoder, replay store, items) and calls the algorithm module's functions with them;
``python training/ppo.py`` and ``python training/evaluate.py`` run these.
"""
