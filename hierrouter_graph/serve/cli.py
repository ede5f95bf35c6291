"""``python -m hierrouter_graph serve`` / ``hierrouter-serve``: load the pool, then serve it.

The pool and policy load before the port opens, so ``GET /health`` answering means the server
can route. Threads are durable by default (SQLite at ``--threads-db``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hierrouter_graph.config import RouterConfig, default_cache_dir
from hierrouter_graph.defaults import default_config
from hierrouter_graph.graph import HierRouterGraph
from hierrouter_graph.serve.app import RouterService, create_app

__all__ = ["build_service", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hierrouter_graph serve", description=__doc__)
    parser.add_argument("--config", help="RouterConfig YAML/JSON (default: the offline pool)")
    parser.add_argument("--policy", help="saved policy folder (default: the shipped one)")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--threads-db",
        type=Path,
        default=None,
        help="SQLite file of the durable threads (default: <cache dir>/threads.sqlite)",
    )
    parser.add_argument(
        "--no-threads", action="store_true", help="stateless: refuse thread_id, store nothing"
    )
    parser.add_argument(
        "--feedback-db",
        type=Path,
        default=None,
        help="SQLite route log for POST /v1/feedback (default: <cache dir>/feedback.sqlite)",
    )
    parser.add_argument("--no-feedback", action="store_true", help="log no routes; refuse /v1/feedback")
    parser.add_argument(
        "--sample",
        action="store_true",
        help="draw each member from the policy's distribution instead of its argmax: the exploration "
        "off-policy learning from feedback needs (training/from_feedback.py)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="routes in flight at once; more requests wait (default: 16, or more when the pool's "
        "micro-batch sizes and endpoint max_concurrency add up to more)",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def build_service(args: argparse.Namespace) -> RouterService:
    """The RouterService for parsed CLI args."""
    from hierrouter_graph.checkpoint import sqlite_checkpointer

    config = RouterConfig.from_file(args.config) if args.config else default_config()
    from hierrouter_graph.serve.feedback import FeedbackStore

    router = HierRouterGraph(config, policy=args.policy, sample=args.sample)
    feedback = None
    if not args.no_feedback:
        feedback = FeedbackStore(args.feedback_db or default_cache_dir() / "feedback.sqlite")
    checkpointer = None
    if not args.no_threads:
        checkpointer = sqlite_checkpointer(args.threads_db or default_cache_dir() / "threads.sqlite")
    return RouterService(
        router,
        checkpointer=checkpointer,
        max_concurrency=args.max_concurrency or max(16, router.pool_width()),
        feedback=feedback,
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = build_service(args)
    where = (
        "no threads"
        if args.no_threads
        else f"threads in {args.threads_db or default_cache_dir() / 'threads.sqlite'}"
    )
    logging.getLogger("hierrouter_graph.serve").info(
        "pool %s loaded; %s; serving on http://%s:%d/v1",
        service.router.config.model_names,
        where,
        args.host,
        args.port,
    )
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
