"""``python training/from_feedback.py``: improve a policy from the server's feedback log.

A thin script: the command line is ``training.cli.from_feedback``; ``training`` is installed with
the package, so nothing patches ``sys.path``.
"""

from training.cli.from_feedback import cli

if __name__ == "__main__":
    raise SystemExit(cli())
