"""Record the full outcome tree: every route of length 1..L for every item, into the replay store.

Why: with the tree recorded, PPO episodes, oracle and single-model baselines and α sweeps are pure
replay (no model runs), and the tree is the ground truth every router is compared against. For M
models, L hops and N items that is N·(M + M² + … + M^L) hops.

The tree is grown level by level and model by model, so each ``run_hops`` call is one stage
instruction over many contexts (one batched ``generate``). Each batch is committed to the store
in one transaction as soon as it is generated, and hops already stored are skipped — so a run
killed with ``kill -9`` and started again loses at most the batch in flight and regenerates
nothing. Endpoint members (inference servers) do not batch here: every endpoint member of a stage
sends its hops of the level concurrently, up to its ``endpoint.max_concurrency`` requests in
flight, and each reply is committed as it arrives (``training/replay/endpoint_hops.py``);
``concurrent=False`` (``--sequential-endpoints``) sends them one at a time, as before.

    python training/record.py --split test --per-task 30 --db runs/replay.sqlite
    python training/record.py --split all --horizon 3     # a deeper tree (extends the L=2 one)

The command line is ``training/cli/record.py``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

from tqdm import tqdm

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import CachedReply, HopResult, run_hops
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.members.remote import endpoint_concurrency
from training.replay.endpoint_hops import HopFailedError, StageCancelledError, concurrent_hops
from training.replay.store import ReplayStore
from training.replay.tree import recorded_hop, tree_size, walk
from training.tasks.items import Item

__all__ = [
    "RecordStats",
    "chunk_line",
    "interleave_tasks",
    "record_in_chunks",
    "record_outcome_tree",
]


@dataclass
class RecordStats:
    """What a recording run did; ``generated + reused == unique_hops``."""

    items: int = 0
    tree_hops: int = 0
    unique_hops: int = 0
    generated: int = 0
    reused: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    generation_s: float = 0.0
    """Seconds spent generating, summed over members: endpoint members' levels run at the same
    time, so with several of them this exceeds the wall time (and ``tokens_per_s`` reads low)."""
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated (in + out) tokens per second of generation."""
        return (self.tokens_in + self.tokens_out) / self.generation_s if self.generation_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


class _BatchWriter:
    """Collects the replies of one ``run_hops`` call and commits them in one transaction."""

    def __init__(self, store: ReplayStore) -> None:
        self.store = store
        self.rows: list[tuple[str, str, CachedReply]] = []

    def get(self, fingerprint: str, prompt: str) -> CachedReply | None:
        return self.store.get(fingerprint, prompt)

    def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None:
        self.rows.append((fingerprint, prompt, reply))

    def flush(self) -> None:
        self.store.put_many(self.rows)
        self.rows.clear()


def _stored_part(
    member: PoolMember, contexts: Sequence[str], instruction: str, cap: int | None, store: ReplayStore
) -> tuple[dict[str, HopResult], list[str]]:
    """The hops of ``contexts`` already in ``store`` (replayed), and the contexts still missing."""
    results: dict[str, HopResult] = {}
    missing: list[str] = []
    for context in contexts:
        hit = recorded_hop(member, context, instruction, store, cap)
        if hit is None:
            missing.append(context)
        else:
            results[context] = hit
    return results, missing


def _hop_level(
    member: PoolMember,
    contexts: Sequence[str],
    instruction: str,
    cap: int | None,
    store: ReplayStore,
    batch_size: int,
    stats: RecordStats,
    bar: tqdm,
    lock: threading.Lock,
) -> dict[str, HopResult]:
    """One model over the unique contexts of one level: replay what is stored, generate the rest.

    ``lock`` guards ``stats`` and ``bar``, which endpoint members' threads update meanwhile.
    """
    results, missing = _stored_part(member, contexts, instruction, cap, store)
    with lock:
        stats.reused += len(results)
        bar.update(len(results))
    missing.sort(key=len)  # similar lengths per batch: less left padding
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        writer = _BatchWriter(store)
        began = time.perf_counter()
        fresh = run_hops(member, chunk, instruction, cache=writer, max_new_tokens=cap)
        spent = time.perf_counter() - began
        writer.flush()
        results.update(zip(chunk, fresh, strict=True))
        with lock:
            stats.generation_s += spent
            stats.tokens_in += sum(hop.tokens_in for hop in fresh)
            stats.tokens_out += sum(hop.tokens_out for hop in fresh)
            stats.generated += len(chunk)
            bar.set_postfix(generated=stats.generated, reused=stats.reused, refresh=False)
            bar.update(len(chunk))
    return results


class _EndpointStage:
    """The endpoint members' levels of the current stage, all started at once in the background.

    Why a stage at a time: the walker asks one model after another, but the members of a stage
    share their contexts, so every endpoint member's level can be in flight together (each on its
    own server, up to its own ``max_concurrency``) while local members batch in the caller's
    thread. Stats and the bar are updated under one lock as replies arrive.
    """

    def __init__(
        self,
        store: ReplayStore,
        stats: RecordStats,
        bar: tqdm,
        items_of: Callable[[str], Sequence[str]],
        members: int,
    ) -> None:
        self.store, self.stats, self.bar, self.items_of = store, stats, bar, items_of
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.jobs: dict[str, Future[dict[str, HopResult]]] = {}
        # one thread per endpoint member: the executor's default (cores + 4) would queue members
        self.pool = ThreadPoolExecutor(max_workers=max(members, 1), thread_name_prefix="record-stage")

    def start(
        self,
        members: Sequence[tuple[PoolMember, int]],
        contexts: list[str],
        instruction: str,
        cap: int | None,
    ) -> None:
        """Send every endpoint member's missing hops of this stage's level (``members``: with slots)."""
        self.jobs = {
            m.name: self.pool.submit(self._level, m, n, contexts, instruction, cap) for m, n in members
        }

    def _level(
        self, member: PoolMember, workers: int, contexts: list[str], instruction: str, cap: int | None
    ) -> dict[str, HopResult]:
        results, missing = _stored_part(member, contexts, instruction, cap, self.store)
        with self.lock:
            self.stats.reused += len(results)
            self.bar.update(len(results))

        def arrived(_context: str, hop: HopResult) -> None:
            with self.lock:
                self.stats.generated += 1
                self.stats.tokens_in += hop.tokens_in
                self.stats.tokens_out += hop.tokens_out
                self.bar.set_postfix(generated=self.stats.generated, reused=self.stats.reused, refresh=False)
                self.bar.update(1)

        began = time.perf_counter()
        fresh = concurrent_hops(
            member, missing, instruction, cap, self.store, workers=workers, items_of=self.items_of,
            on_hop=arrived, stop=self.stop,
        )  # fmt: skip
        with self.lock:
            self.stats.generation_s += time.perf_counter() - began
        return {**results, **fresh}

    def result(self, name: str) -> dict[str, HopResult]:
        """``name``'s level; the first member's ``HopFailedError`` if any member of the stage failed."""
        try:
            return self.jobs.pop(name).result()
        except StageCancelledError:
            for job in self.jobs.values():  # the member whose hop failed is still to be read
                error = job.exception()
                if isinstance(error, HopFailedError):
                    raise error from None
            raise

    def close(self, failed: bool) -> None:
        """Wait for what is in flight (stored as it lands); nothing more is sent after a failure."""
        if failed:
            self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _item_namer(items: Sequence[Item]) -> Callable[[str], list[str]]:
    """context → the ids of the items whose tree it is in (contexts start with the item's prompt)."""
    by_prompt: dict[str, list[str]] = {}
    for item in items:
        by_prompt.setdefault(item.prompt, []).append(item.id)
    longest_first = sorted(by_prompt, key=len, reverse=True)

    def items_of(context: str) -> list[str]:
        return next((by_prompt[p] for p in longest_first if context.startswith(p)), [])

    return items_of


def record_outcome_tree(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Sequence[Item],
    store: ReplayStore,
    batch_size: int = 16,
    progress: bool = True,
    concurrent: bool = True,
) -> RecordStats:
    """Fill ``store`` with every hop of every route of length 1..L for ``items``.

    Identical contexts (duplicate prompts, or routes that happen to give the same replies) are
    generated once. The progress bar counts unique hops, replayed ones included. With
    ``concurrent`` (the default) endpoint members send a stage's hops concurrently (see the
    module docstring); the replies, and so the record, are the same either way.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    members = [pool[name] for name in config.model_names]
    stats = RecordStats(items=len(items), tree_hops=tree_size(len(items), len(members), config.horizon))
    slots = [(m, n) for m in members if concurrent and (n := endpoint_concurrency(m)) is not None]
    began = time.perf_counter()
    roots = list(dict.fromkeys(item.prompt for item in items))  # identical prompts: one tree
    stage = 0
    failed = True
    with tqdm(total=None, unit="hop", disable=not progress, desc="recording") as bar:
        served = _EndpointStage(store, stats, bar, _item_namer(items), len(slots))

        def hops_for(
            member: PoolMember, contexts: list[str], instruction: str, cap: int | None
        ) -> dict[str, HopResult]:
            """One model over the distinct contexts of one level (``_hop_level``), counted."""
            if member is members[0]:
                bar.total = (bar.total or 0) + len(contexts) * len(members)
                bar.refresh()
                served.start(slots, contexts, instruction, cap)
            bar.set_description(f"stage {stage} · {member.name}")
            if member.name in served.jobs:
                hops = served.result(member.name)
            else:
                hops = _hop_level(
                    member, contexts, instruction, cap, store, batch_size, stats, bar, served.lock
                )
            stats.unique_hops += len(hops)
            return hops

        try:
            for _level in walk(config, pool, roots, hops_for):
                stage += 1
            failed = False
        finally:
            served.close(failed)
    stats.wall_s = time.perf_counter() - began
    return stats


def interleave_tasks(items: Sequence[Item]) -> list[Item]:
    """Round-robin over tasks, keeping each task's own order.

    Why: recording in chunks of this order makes every finished prefix a task-balanced dataset,
    so a recording stopped at any point has already produced something worth training on.
    """
    by_task: dict[str, list[Item]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    queues = list(by_task.values())
    ordered: list[Item] = []
    for position in range(max((len(q) for q in queues), default=0)):
        ordered.extend(queue[position] for queue in queues if position < len(queue))
    return ordered


def record_in_chunks(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Sequence[Item],
    store: ReplayStore,
    chunk_items: int,
    batch_size: int = 16,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    on_chunk: Callable[[], object] | None = None,
    concurrent: bool = True,
    log: Callable[[str], object] | None = None,
) -> RecordStats:
    """Complete the whole tree of ``chunk_items`` task-interleaved items before starting the next.

    Why: a level-by-level pass over thousands of items finishes no item until the last level, so
    hours of recording that get cut off leave nothing trainable. Chunks trade a little batching
    for trees that complete continuously (``training.replay.tree.complete_items`` finds them).

    ``shard=(k, n)`` records only the chunks whose index is ``k`` modulo ``n``: on a machine whose
    single generation cannot use every core, ``n`` processes sharing one store split the chunks
    without ever generating the same reply twice. ``on_chunk`` runs after each completed chunk
    (``--export-to`` writes the record's shippable file there, so a cut-off run loses no chunk).
    ``log`` gets one line per completed chunk (``chunk_line``): what an hours-long recording in
    the background says about its pace.
    """
    if chunk_items < 1:
        raise ValueError(f"chunk_items must be >= 1, got {chunk_items}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be K/N with 0 <= K < N, got {index}/{count}")
    ordered = interleave_tasks(items)
    total = RecordStats(items=0)
    for chunk_index, start in enumerate(range(0, len(ordered), chunk_items)):
        if chunk_index % count != index:
            continue
        chunk = ordered[start : start + chunk_items]
        total.items += len(chunk)
        if progress:
            print(f"chunk items {start}-{start + len(chunk) - 1} of {len(ordered)}", file=sys.stderr)
        part = record_outcome_tree(
            config, pool, chunk, store, batch_size=batch_size, progress=progress, concurrent=concurrent
        )
        for name in ("tree_hops", "unique_hops", "generated", "reused", "tokens_in", "tokens_out"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.generation_s += part.generation_s
        total.wall_s += part.wall_s
        if on_chunk is not None:
            on_chunk()
        if log is not None:
            log(chunk_line(chunk_index, start, len(chunk), len(ordered), part))
    return total


def chunk_line(index: int, start: int, size: int, total: int, stats: RecordStats) -> str:
    """One completed chunk: its items, hops generated and reused, tokens, wall time and pace."""
    tokens = stats.tokens_in + stats.tokens_out
    return (
        f"chunk {index} (items {start}-{start + size - 1} of {total}) done: {stats.generated} hops "
        f"generated, {stats.reused} reused; {stats.tokens_out} tokens out, {tokens} in+out at "
        f"{stats.tokens_per_s:.1f} tokens/s; {stats.wall_s / 60:.1f} min"
    )
