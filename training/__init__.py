"""Training, evaluation and the experiments of HierRouter, kept out of the installed library.

The graph replayed as an RL environment (``env.py``) over a recorded outcome tree (``tree.py``,
``record.py``, ``replay.py``), PPO (``ppo.py``), the evaluation against every baseline
(``evaluate.py``, ``strategies.py``, ``statistics.py``, ``reports.py``), sweeps and tuning, the
LoRA specialists (``specialists/``) and the command lines (``cli/``): docs/training.md has the
module map. They depend on benchmark files and a code sandbox that a user of the router never
needs, so they live next to the package instead of inside it.
"""
