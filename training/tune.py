"""``python training/tune.py``: choose PPO's learning rate and length on held-out train items.

A thin script: the command line is ``training.cli.tune``; ``training`` is installed with the
package, so nothing patches ``sys.path``.
"""

from training.cli.tune import cli

if __name__ == "__main__":
    raise SystemExit(cli())
