"""``python training/record.py``: record the outcome tree of the router's items.

A thin script: the command line is ``training.cli.record``; ``training`` is installed with the
package, so nothing patches ``sys.path``.
"""

from training.cli.record import cli

if __name__ == "__main__":
    raise SystemExit(cli())
