"""Concurrent recording hops for endpoint members: a level's hops sent side by side, stored as they arrive.

Why: a local member turns a level into one batched ``generate``, but an endpoint member's hops
went out one after another, so a fleet that answers 64 requests at once sat at one — recording
5,000 items × 20 routes at ~1–2 s a call took days. Here each endpoint member's missing hops of
a level go to a worker pool of its ``endpoint.max_concurrency`` threads (the client's semaphore
bounds the requests in flight to the same number), and every member of a stage runs at once.

Each reply goes through the graph's own ``run_hop`` with the replay store as its cache, so the
prompt, key, token counts and price are exactly the sequential recording's, and each reply is
committed in its own transaction the moment it arrives: a run killed with ``kill -9`` loses only
the requests in flight, and the next run skips everything stored (``INSERT OR IGNORE`` keeps the
first reply if two processes ever race on one key). Retries, backoff and the per-request timeout
are the endpoint client's (``hierrouter_graph.members.remote.EndpointClient``); a hop that still fails
raises ``HopFailedError`` naming the member and the item, after the hops already in flight have
landed (and been stored).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from hierrouter_graph.hop import HopResult, ReplyCache, run_hop
from hierrouter_graph.members.pool import PoolMember

__all__ = ["HopFailedError", "StageCancelledError", "concurrent_hops"]


class HopFailedError(RuntimeError):
    """An endpoint hop failed for good while recording; names the member and the item(s)."""

    def __init__(self, member: str, items: Sequence[str], cause: BaseException) -> None:
        self.member = member
        self.items = list(items)
        self.cause = cause
        shown = ", ".join(repr(i) for i in self.items[:3]) + (" …" if len(self.items) > 3 else "")
        noun = "item" if len(self.items) == 1 else "items"
        super().__init__(
            f"recording the hop of model {member!r} for {noun} {shown or '(unknown)'} failed: "
            f"{type(cause).__name__}: {cause} (the replies already received are stored; run the "
            "same command again to resume)"
        )


class StageCancelledError(RuntimeError):
    """Another hop of the stage failed, so this one was not sent."""


def concurrent_hops(
    member: PoolMember,
    contexts: Sequence[str],
    instruction: str,
    cap: int | None,
    store: ReplyCache,
    *,
    workers: int,
    items_of: Callable[[str], Sequence[str]],
    on_hop: Callable[[str, HopResult], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, HopResult]:
    """``run_hop`` of ``member`` for every context, ``workers`` at a time, each stored on arrival.

    ``items_of(context)`` names the items a context belongs to (for the error); ``on_hop`` is
    called (in a worker thread) with each finished hop; ``stop`` set by another failing member
    keeps hops not yet sent from being sent. Raises ``HopFailedError`` for the first failure.
    """
    if workers < 1:
        raise ValueError(f"{member.name}: workers must be >= 1, got {workers}")
    stop = stop if stop is not None else threading.Event()

    def one(context: str) -> HopResult:
        if stop.is_set():
            raise StageCancelledError(f"{member.name}: not sent, another hop of the stage failed")
        hop = run_hop(member, context, instruction, store, cap)
        if on_hop is not None:
            on_hop(context, hop)
        return hop

    results: dict[str, HopResult] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"record-{member.name}") as pool:
        futures: dict[Future[HopResult], str] = {pool.submit(one, c): c for c in contexts}
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            stop.set()  # the leaving `with` waits for the requests in flight (they get stored)
            for future in futures:
                future.cancel()
            cause = failed.exception()
            assert cause is not None
            if isinstance(cause, StageCancelledError):
                raise cause
            raise HopFailedError(member.name, items_of(futures[failed]), cause) from cause
        for future, context in futures.items():
            results[context] = future.result()
    return results
