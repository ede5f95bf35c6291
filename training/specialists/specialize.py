"""``python training/specialists/specialize.py``: train the LoRA specialists.

A thin script: the command line is ``training.cli.specialize``; ``training`` is installed with the
package, so nothing patches ``sys.path``.
"""

from training.cli.specialize import cli

if __name__ == "__main__":
    raise SystemExit(cli())
