"""A throwaway scoring process for the hostile-code suite (run as ``python -m``, never imported).

Why a separate process: several probes try to kill "the scorer" or read its environment; the
suite must be able to see that the scorer survived instead of dying with it.

argv: a file with the probe code, then ``score`` (the project path: ``metrics.score`` on an MBPP
item whose test is ``assert f() == 3``) or ``run`` (``run_python`` directly, with the number of
processes allowed and the timeout). ``SCORER_PID`` in the code becomes this process's pid.
Prints one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from hierrouter_graph.sandbox import SandboxLimits, isolation_summary, run_python
from training.tasks.metrics import score


@dataclasses.dataclass
class _Item:
    references: list[str]
    metric: str
    meta: dict[str, Any]


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        code = fh.read().replace("SCORER_PID", str(os.getpid()))
    mode, timeout_s = sys.argv[2], float(sys.argv[3])
    if mode == "score":
        item = _Item(["def f"], "mbpp_pass", {"test_list": ["assert f() == 3"]})
        value = score(item, f"```python\n{code}\n```", timeout_s=timeout_s)
        print(json.dumps({"score": value, "isolation": isolation_summary()}), flush=True)
        return
    limits = SandboxLimits(timeout_s=timeout_s, max_processes=int(sys.argv[4]))
    result = run_python(code, limits=limits)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main()
