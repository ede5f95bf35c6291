"""``python training/evaluate.py``: evaluate a saved policy against every baseline.

A thin script: the command line is ``training.cli.evaluate``; ``training`` is installed with the
package, so nothing patches ``sys.path``.
"""

from training.cli.evaluate import cli

if __name__ == "__main__":
    raise SystemExit(cli())
