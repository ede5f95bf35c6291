"""``python training/sweep.py``: the L × α grid: train and evaluate each setting.

A thin script: the command line is ``training.cli.sweep``; ``training`` is installed with the
package, so nothing patches ``sys.path``.
"""

from training.cli.sweep import cli

if __name__ == "__main__":
    raise SystemExit(cli())
