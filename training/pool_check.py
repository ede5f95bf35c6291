"""``python training/pool_check.py``: is a pool worth routing? Its hindsight task oracle against
its best single member on the recorded train items, and its cost range.

A thin script: the command line is ``training.cli.pool_check``; ``training`` is installed with
the package, so nothing patches ``sys.path``.
"""

from training.cli.pool_check import cli

if __name__ == "__main__":
    raise SystemExit(cli())
