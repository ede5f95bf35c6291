"""Training, evaluation and the experiments of HierRouter, installed beside the library.

The wings, lowest first; a module imports its own wing and the wings below it only
(``tests/test_house.py`` checks it; docs/training.md has the map):

- ``tasks/``: what an item is, the benchmarks, answers, metrics and THE reward;
- ``replay/``: the replay store, the recorded outcome tree and its recording, shipped records;
- ``rl/``: the replayed graph as an environment, PPO, its arguments and the one set-up path;
- ``evaluation/``: every strategy the router is compared with, statistics, curves, reports;
- ``experiments/`` and ``specialists/`` (one level): sweeps, tuning, the dynamic pool, learning
  from feedback, reply budgets; the LoRA specialists;
- ``cli/``: the command lines; the documented scripts (``python training/ppo.py`` and the others)
  are thin files that call them.

The library (``hierrouter_graph``) never imports ``training``: a user of the router needs none
of the benchmark files or the code sandbox these depend on.
"""
