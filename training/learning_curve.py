"""``python training/learning_curve.py``: the learning curve (every router against the best single
member, fitted on 24 / 48 / 96 / 192 / 420 train items).

A thin script: the command line is ``training.cli.learning_curve``; ``training`` is installed with
the package, so nothing patches ``sys.path``.
"""

from training.cli.learning_curve import cli

if __name__ == "__main__":
    raise SystemExit(cli())
