"""``python training/backfill_confidence.py``: give recorded replies their confidence.

A thin script: the command line is ``training.replay.backfill_confidence``; ``training`` is
installed with the package, so nothing patches ``sys.path``.
"""

from training.replay.backfill_confidence import cli

if __name__ == "__main__":
    raise SystemExit(cli())
