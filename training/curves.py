"""``python training/curves.py``: the cost-quality curve study.

A thin script: the command line is ``training.cli.curves``; ``training`` is installed with the
package, so nothing patches ``sys.path``.
"""

from training.cli.curves import cli

if __name__ == "__main__":
    raise SystemExit(cli())
