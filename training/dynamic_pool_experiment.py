"""``python training/dynamic_pool_experiment.py``: the dynamic-pool experiment.

A thin script: the command line is ``training.cli.dynamic_pool_experiment``; ``training`` is
installed with the package, so nothing patches ``sys.path``.
"""

from training.cli.dynamic_pool_experiment import cli

if __name__ == "__main__":
    raise SystemExit(cli())
