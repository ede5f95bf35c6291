"""``python -m hierrouter_graph "question"``: route one query and print every hop.

``python -m hierrouter_graph serve [...]`` starts the OpenAI-compatible server instead
(``hierrouter_graph/serve/cli.py``; ``serve --help`` lists its options), and
``python -m hierrouter_graph prepare [--config FILE] [--jobs N]`` converts the pool's local models
ahead of first use, several at once (``hierrouter_graph/members/prepare.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from hierrouter_graph.display import format_result
from hierrouter_graph.graph import HierRouterGraph, InvalidQueryError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["serve"]:
        from hierrouter_graph.serve.cli import main as serve

        return serve(args_in[1:])
    if args_in[:1] == ["prepare"]:
        return prepare(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m hierrouter_graph", description=__doc__)
    parser.add_argument("query", help="the question to route")
    parser.add_argument("--config", help="RouterConfig YAML/JSON (default: the offline pool)")
    parser.add_argument("--policy", help="folder of a saved RouterPolicy (default: the shipped one)")
    parser.add_argument("--horizon", type=int, help="override L")
    parser.add_argument("--sample", action="store_true", help="sample routes instead of argmax")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    args = parser.parse_args(args_in)
    # Before anything is loaded (encoder, pool): an unusable query fails in milliseconds.
    if not args.query.strip():
        raise InvalidQueryError("query: expected a non-empty string, got an empty one")

    config = RouterConfig.from_file(args.config) if args.config else default_config()
    if args.horizon is not None:
        config = RouterConfig.model_validate({**config.model_dump(), "horizon": args.horizon})
    router = HierRouterGraph(config, policy=args.policy, sample=args.sample, seed=args.seed)
    result = router.invoke(args.query)
    if args.json:
        json.dump({k: v for k, v in result.items() if k != "messages"}, sys.stdout, indent=2)
        print()
    else:
        print(format_result(result))
    return 0


def prepare(argv: list[str]) -> int:
    """``prepare``: convert every local member's model now, ``--jobs`` at once."""
    from hierrouter_graph.members.prepare import prepare_models

    parser = argparse.ArgumentParser(
        prog="python -m hierrouter_graph prepare",
        description="Assemble and convert a pool's local models before first use, several at once.",
    )
    parser.add_argument("--config", help="RouterConfig YAML/JSON (default: the offline pool)")
    parser.add_argument("--jobs", type=int, default=2, help="conversions at once, one process each")
    args = parser.parse_args(argv)
    config = RouterConfig.from_file(args.config) if args.config else default_config()
    started = time.perf_counter()
    prepared = prepare_models(config, jobs=args.jobs)
    for model in prepared:
        openvino = "".join(f" + OpenVINO IR {folder}" for folder in model.openvino)
        names = ", ".join(model.members)
        print(f"{names}: {model.source} -> {model.folder}{openvino} ({model.seconds:.1f}s)")
    print(f"{len(prepared)} model(s) ready in {time.perf_counter() - started:.1f}s")
    return 0


def cli() -> int:
    """Console entry point: input errors print one line (``--debug`` shows the traceback)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
