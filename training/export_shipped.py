"""``python training/export_shipped.py``: rewrite a pool's shipped record from a store.

A thin script: the command line is ``training.replay.export_shipped``; ``training`` is installed
with the package, so nothing patches ``sys.path``.
"""

from training.replay.export_shipped import cli

if __name__ == "__main__":
    raise SystemExit(cli())
