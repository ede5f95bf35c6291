"""Micro-batching: coalescing, caps, the wait bound, errors, shutdown, and identical hop results.

The batcher tests use a manual clock and submit from one thread where possible, so batch
composition is decided by the batcher's rules, not by thread timing. The tiny-model tests use a
wait far longer than the test (the batch goes when it is FULL), which makes the number of
``generate`` calls exact.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import pytest
from langchain_huggingface import ChatHuggingFace

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig, run_hop
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import HopResult
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.microbatch import MicroBatchedChatModel, MicroBatcher, MicroBatcherClosedError
from tests.trace_compare import assert_same_traces

INSTRUCTION = "Solve."
CONTEXTS = [
    "What is seven times six?",
    "def add(a, b):",
    "Which planet is largest? A. Mars B. Jupiter C. Venus D. Earth",
    "q",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 boxed answer",
    "Describe the problem in detail, then plan how you would solve it.",
    "Using the previous analysis and plan, verify if the approach is correct.",
]
SIMILAR = [f"What is {a} times {a + 3}?" for a in range(2, 10)]  # one generate call can hold them all
LONG_WAIT_MS = 60_000.0  # far beyond any test: a batch is dispatched because it is full


def _microbatch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("microbatch-")]


@pytest.fixture(autouse=True)
def _no_leaked_workers() -> Iterator[None]:
    before = set(_microbatch_threads())
    yield
    leaked = [t.name for t in _microbatch_threads() if t not in before]
    assert not leaked, f"micro-batch workers left running: {leaked}"


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """A batch function that records every batch it is given."""

    def __init__(self, fail_on: object = None) -> None:
        self.calls: list[list[Any]] = []
        self.fail_on = fail_on

    def __call__(self, items: list[Any]) -> list[Any]:
        self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"cannot handle {self.fail_on!r}")
        return [f"r{item}" for item in items]


# -- the batcher on its own ----------------------------------------------------------------------
def test_requests_arriving_together_share_one_call() -> None:
    recorder, clock = Recorder(), ManualClock()
    with MicroBatcher(recorder, max_batch_size=6, max_wait_ms=5, clock=clock) as batcher:
        futures = [batcher.submit(i) for i in range(6)]
        assert [f.result(timeout=30) for f in futures] == [f"r{i}" for i in range(6)]
    assert recorder.calls == [[0, 1, 2, 3, 4, 5]]
    assert batcher.stats().batches == 1 and batcher.stats().largest_batch == 6


def test_batch_size_cap_is_respected_in_arrival_order() -> None:
    recorder, clock = Recorder(), ManualClock()
    with MicroBatcher(recorder, max_batch_size=4, max_wait_ms=5, clock=clock) as batcher:
        futures = [batcher.submit(i) for i in range(10)]
        for future in futures[:8]:
            future.result(timeout=30)
        assert recorder.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full batches go at once
        clock.advance(0.005)  # the last two only go when their wait is over
        assert [f.result(timeout=30) for f in futures[8:]] == ["r8", "r9"]
    assert recorder.calls[-1] == [8, 9]
    assert all(len(call) <= 4 for call in recorder.calls)


def test_wait_bound_counts_from_the_oldest_request() -> None:
    recorder, clock = Recorder(), ManualClock()
    with MicroBatcher(recorder, max_batch_size=8, max_wait_ms=5, clock=clock) as batcher:
        first = batcher.submit("a")
        with pytest.raises(FutureTimeout):  # 0 ms have passed on the batcher's clock: it waits
            first.result(timeout=0.3)
        clock.advance(0.004)
        second = batcher.submit("b")  # joins; its own wait does not push the deadline out
        with pytest.raises(FutureTimeout):
            first.result(timeout=0.3)
        clock.advance(0.001)  # 5 ms after "a" arrived
        assert (first.result(timeout=30), second.result(timeout=30)) == ("ra", "rb")
    assert recorder.calls == [["a", "b"]]


def test_zero_wait_sends_a_lone_request_at_once() -> None:
    recorder = Recorder()
    with MicroBatcher(recorder, max_batch_size=8, max_wait_ms=0, clock=ManualClock()) as batcher:
        assert batcher("x") == "rx"
    assert recorder.calls == [["x"]]


def test_an_error_reaches_every_caller_of_its_batch_and_the_worker_keeps_serving() -> None:
    recorder, clock = Recorder(fail_on="bad"), ManualClock()
    with MicroBatcher(recorder, max_batch_size=3, max_wait_ms=5, clock=clock) as batcher:
        failed = [batcher.submit(item) for item in ("ok1", "bad", "ok2")]
        for future in failed:
            with pytest.raises(RuntimeError, match="cannot handle 'bad'"):
                future.result(timeout=30)
        after = [batcher.submit(item) for item in ("ok3", "ok4", "ok5")]
        assert [f.result(timeout=30) for f in after] == ["rok3", "rok4", "rok5"]
    assert recorder.calls == [["ok1", "bad", "ok2"], ["ok3", "ok4", "ok5"]]


def test_a_wrong_number_of_results_fails_the_whole_batch() -> None:
    with MicroBatcher(lambda items: items[:-1], max_batch_size=2, max_wait_ms=5, clock=ManualClock()) as b:
        futures = [b.submit(1), b.submit(2)]
        for future in futures:
            with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
                future.result(timeout=30)


def test_close_drains_the_queue_joins_the_worker_and_refuses_new_work() -> None:
    recorder = Recorder()
    before = set(_microbatch_threads())  # idle workers of other tests' pools may still be winding down
    batcher: MicroBatcher[int, str] = MicroBatcher(
        recorder, max_batch_size=8, max_wait_ms=LONG_WAIT_MS, clock=ManualClock()
    )
    futures = [batcher.submit(1), batcher.submit(2)]
    batcher.close()  # does not wait out the minute-long batch wait
    assert [f.result(timeout=0) for f in futures] == ["r1", "r2"]
    assert not batcher.worker_alive and not set(_microbatch_threads()) - before
    with pytest.raises(MicroBatcherClosedError):
        batcher.submit(3)


def test_idle_worker_exits_and_restarts_on_demand() -> None:
    recorder = Recorder()
    with MicroBatcher(recorder, max_batch_size=2, max_wait_ms=0, idle_timeout_s=0.05) as batcher:
        assert batcher(1) == "r1"
        deadline = time.monotonic() + 30
        while batcher.worker_alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not batcher.worker_alive, "an idle worker must not hold a thread forever"
        assert batcher(2) == "r2"
    assert recorder.calls == [[1], [2]]


def test_many_threads_each_get_their_own_result() -> None:
    calls: list[int] = []

    def double(items: list[int]) -> list[int]:
        calls.append(len(items))
        time.sleep(0.001)  # let requests pile up behind a running batch
        return [2 * item for item in items]

    with (
        MicroBatcher(double, max_batch_size=8, max_wait_ms=2) as batcher,
        ThreadPoolExecutor(max_workers=48) as pool,
    ):
        results = list(pool.map(batcher, range(200)))
    assert results == [2 * i for i in range(200)]
    assert sum(calls) == 200 and max(calls) <= 8


# -- micro-batched local models --------------------------------------------------------------------
def _config(tiny_specs: list[ModelSpec], tmp_path: Path, **batching: Any) -> RouterConfig:
    specs = [spec.model_copy(update=batching) for spec in tiny_specs]
    return RouterConfig(models=specs, horizon=2, cache_dir=tmp_path / "cache")


def _close(pool: dict[str, PoolMember]) -> None:
    for member in pool.values():
        if isinstance(member.chat_model, MicroBatchedChatModel):
            member.chat_model.batcher.close()


@pytest.fixture()
def pools(tiny_specs: list[ModelSpec], tmp_path: Path) -> Iterator[Callable[..., dict[str, PoolMember]]]:
    built: list[dict[str, PoolMember]] = []

    def make(**batching: Any) -> dict[str, PoolMember]:
        built.append(build_pool(_config(tiny_specs, tmp_path, **batching)))
        return built[-1]

    yield make
    for pool in built:
        _close(pool)


class GenerateSpy:
    """Counts ``generate`` calls on a loaded model and the batch size of each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: Any) -> None:
        self.sizes: list[int] = []
        original = model.generate

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.sizes.append(int(kwargs["input_ids"].shape[0]))
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "generate", spy)


def _concurrently(fn: Callable[[str], Any], items: list[str]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


def test_micro_batching_is_on_by_default_and_off_at_batch_size_one(pools) -> None:
    batched, plain = pools(), pools(max_batch_size=1)
    assert isinstance(batched["tiny-a"].chat_model, MicroBatchedChatModel)
    assert batched["tiny-a"].chat_model.batcher.max_batch_size == 16
    assert isinstance(plain["tiny-a"].chat_model, ChatHuggingFace)


def test_batching_settings_leave_the_fingerprint_unchanged(tiny_specs: list[ModelSpec]) -> None:
    spec = tiny_specs[0]
    tuned = spec.model_copy(update={"max_batch_size": 1, "batch_wait_ms": 250.0})
    assert tuned.fingerprint() == spec.fingerprint()
    assert "batch" not in spec.fingerprint()


def _without_confidence(hops: list[HopResult]) -> list[HopResult]:
    """The plain pipeline (max_batch_size 1) exposes no log-probs; everything else must be equal."""
    return [dataclasses.replace(hop, confidence=None) for hop in hops]


def test_concurrent_hops_coalesce_into_exact_generate_calls(pools, monkeypatch) -> None:
    member = pools(max_batch_size=4, batch_wait_ms=LONG_WAIT_MS)["tiny-a"]
    spy = GenerateSpy(monkeypatch, member.batch_generate.model)
    _concurrently(lambda c: run_hop(member, c, INSTRUCTION), SIMILAR)  # 8 hops arrive together
    assert spy.sizes == [4, 4]
    assert member.chat_model.batcher.stats().batches == 2


def test_a_much_longer_prompt_gets_its_own_generate_call(pools, monkeypatch) -> None:
    member = pools(max_batch_size=8, batch_wait_ms=LONG_WAIT_MS)["tiny-a"]
    spy = GenerateSpy(monkeypatch, member.batch_generate.model)
    long_context = "The quick brown fox jumps over the lazy dog. " * 12
    hops = _concurrently(lambda c: run_hop(member, c, INSTRUCTION), [*SIMILAR[:7], long_context])
    assert member.chat_model.batcher.stats().batches == 1  # one micro-batch ...
    assert sorted(spy.sizes) == [1, 7]  # ... split so padding stays under half of the prompt tokens
    plain = pools(max_batch_size=1)["tiny-a"]
    assert _without_confidence(hops) == [run_hop(plain, c, INSTRUCTION) for c in [*SIMILAR[:7], long_context]]


def test_chunks_keep_at_least_half_of_the_prompt_tokens_real() -> None:
    from hierrouter_graph.members.generation import BatchGenerator

    generator = BatchGenerator(model=None, tokenizer=None, generate_kwargs={}, max_batch=4)
    assert generator._chunks([30, 10, 20, 10]) == [[1, 3, 2, 0]]  # shortest first, one call
    assert generator._chunks([10] * 6) == [[0, 1, 2, 3], [4, 5]]  # max_batch
    assert generator._chunks([10, 10, 10, 30]) == [[0, 1, 2, 3]]  # 4 x 30 = 2 x 60: half is real
    assert generator._chunks([10, 10, 10, 31]) == [[0, 1, 2], [3]]  # 4 x 31 > 2 x 61


def test_concurrent_hops_equal_unbatched_hops(pools) -> None:
    """fp32 greedy: same replies, token counts and costs as one-by-one, whatever the batch mates."""
    plain = pools(max_batch_size=1)  # the text-generation pipeline, one prompt per call
    expected = {name: [run_hop(member, c, INSTRUCTION) for c in CONTEXTS] for name, member in plain.items()}
    assert len({hop.reply for hop in expected["tiny-a"]}) > 1, "replies must differ to mean anything"
    for batching in ({"max_batch_size": 8, "batch_wait_ms": LONG_WAIT_MS}, {"batch_wait_ms": 2.0}):
        for name, member in pools(**batching).items():
            got = _concurrently(lambda c, m=member: run_hop(m, c, INSTRUCTION), CONTEXTS * 4)
            assert _without_confidence(got) == expected[name] * 4, f"{name} {batching}"
            assert all(hop.confidence is not None for hop in got)  # read off the batched generate
            assert member.chat_model.batcher.stats().items == len(CONTEXTS) * 4


def test_a_failing_generate_reaches_every_hop_of_the_batch(pools, monkeypatch) -> None:
    member = pools(max_batch_size=4, batch_wait_ms=LONG_WAIT_MS)["tiny-a"]
    model = member.batch_generate.model

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "generate", broken)

    def hop(context: str) -> str:
        try:
            return run_hop(member, context, INSTRUCTION).reply
        except RuntimeError as error:
            return f"error: {error}"

    assert _concurrently(hop, CONTEXTS[:4]) == ["error: device lost"] * 4
    monkeypatch.undo()
    assert all(not r.startswith("error") for r in _concurrently(hop, CONTEXTS[:4]))  # still serving


def test_graph_batch_coalesces_each_stage_and_equals_sequential_invokes(
    tiny_specs: list[ModelSpec], tmp_path: Path, monkeypatch
) -> None:
    queries = SIMILAR
    route = FixedRoutePolicy(["tiny-a", "tiny-b"], ["tiny-a", "tiny-b"])
    plain = HierRouterGraph(_config(tiny_specs, tmp_path, max_batch_size=1), route)
    expected = [plain.invoke(q) for q in queries]
    config = _config(tiny_specs, tmp_path, max_batch_size=len(queries), batch_wait_ms=LONG_WAIT_MS)
    pool = build_pool(config)
    try:
        spies = {name: GenerateSpy(monkeypatch, m.batch_generate.model) for name, m in pool.items()}
        router = HierRouterGraph(config, route, chat_models=pool)
        outputs = router.batch(queries)  # all 8 must run at once, or the full batch never forms
    finally:
        _close(pool)
    # the plain pipeline exposes no log-probs: everything but the confidence must be identical
    assert_same_traces([o["trace"] for o in outputs], [e["trace"] for e in expected], confidence=False)
    assert all(hop["confidence"] is not None for o in outputs for hop in o["trace"])
    assert [o["answer"] for o in outputs] == [e["answer"] for e in expected]
    assert {name: spy.sizes for name, spy in spies.items()} == {"tiny-a": [8], "tiny-b": [8]}
