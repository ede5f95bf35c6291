"""``python training/from_feedback.py DB``: the command line is ``training/cli/from_feedback.py``;
the estimator is ``training/offpolicy.py``."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make `hierrouter_graph` and `training` importable
    import runpy

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runpy.run_module("training.cli.from_feedback", run_name="__main__", alter_sys=True)
