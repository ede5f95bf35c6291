"""``python training/feedback_simulation.py``: the feedback loop simulated on a recorded tree.

A thin script: the command line is ``training.cli.feedback_simulation``; ``training`` is installed
with the package, so nothing patches ``sys.path``.
"""

from training.cli.feedback_simulation import cli

if __name__ == "__main__":
    raise SystemExit(cli())
