"""``python training/from_feedback.py DB``: improve a policy offline from a server's route log.

    python training/from_feedback.py runs/feedback.sqlite --out runs/feedback-policy

Reads every route with feedback from ``DB`` (``hierrouter-serve --feedback-db``), encodes the
logged states with the starting policy's encoder, runs the clipped importance-weighted update
(``training.experiments.offpolicy``) and writes the new policy; its policy.json's ``training.feedback`` names
the data (db path, routes, decisions, date range, sha256).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from training.cli.flags import add_dataclass_flags, dataclass_from_flags
from training.experiments.offpolicy import OffPolicyArgs, retrain_from_log

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python training/from_feedback.py", description=__doc__)
    parser.add_argument("db", type=Path, help="the server's route log (SQLite)")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY_DIR, help="starting policy (shipped)")
    parser.add_argument("--out", type=Path, default=Path("runs/feedback-policy"))
    parser.add_argument("--alpha", type=float, default=None, help="α of routes logged without one")
    add_dataclass_flags(parser.add_argument_group("the update (OffPolicyArgs)"), OffPolicyArgs)
    ns = parser.parse_args(argv)
    args = dataclass_from_flags(ns, OffPolicyArgs)
    folder, training = retrain_from_log(ns.db, ns.policy, ns.out, args, ns.alpha)
    print(f"wrote {folder}: {json.dumps(training['feedback'])}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
