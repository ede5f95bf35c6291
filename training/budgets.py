"""``python training/budgets.py``: reply-length budgets per candidate member and task.

A thin script: the command line is ``training.experiments.budgets``; ``training`` is installed with
the package, so nothing patches ``sys.path``.
"""

from training.experiments.budgets import cli

if __name__ == "__main__":
    raise SystemExit(cli())
