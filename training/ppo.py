"""``python training/ppo.py``: train the router with PPO on the replayed tree, then evaluate it.

A thin script: the command line is ``training.cli.ppo``; ``training`` is installed with the package,
so nothing patches ``sys.path``.
"""

from training.cli.ppo import cli

if __name__ == "__main__":
    raise SystemExit(cli())
