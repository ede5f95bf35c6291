"""``python training/specialists/specialist_eval.py``: does a specialist beat the generalist.

A thin script: the command line is ``training.specialists.paired_check``; ``training`` is installed
with the package, so nothing patches ``sys.path``.
"""

from training.specialists.paired_check import cli

if __name__ == "__main__":
    raise SystemExit(cli())
