"""Program-aided members: the reply is the program plus its REAL output (the sandbox runs it),
priced by the model's tokens plus the execution price, traced, batched and replayed like any hop."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from hierrouter_graph import EndpointSpec, HierRouterGraph, ModelSpec, PoolMember, RouterConfig, run_hop
from hierrouter_graph.cost import hop_cost
from hierrouter_graph.hop import CachedReply, run_hops
from hierrouter_graph.members.program import ProgramRunner, ProgramSettings, program_aided
from hierrouter_graph.members.program_reply import (
    DEFAULT_PROGRAM_SYSTEM_PROMPT,
    extract_program,
    program_trace,
)
from hierrouter_graph.microbatch import GenerationRequest, MicroBatchedChatModel, MicroBatcher
from hierrouter_graph.policy.protocol import FixedRoutePolicy
from hierrouter_graph.sandbox import SandboxResult, SandboxUnavailable, run_python

_SUM = re.compile(r"What is (\d+) plus (\d+)\?")


class _Words:
    """A TokenCounter counting words: exact, readable token counts."""

    def count_prompt(self, messages: Any) -> int:
        return sum(len(str(m.content).split()) for m in messages)

    def count_text(self, text: str) -> int:
        return len(text.split())

    def truncate_middle(self, text: str, max_tokens: int, marker: str) -> str:
        return text


def _program_for(prompt: str) -> str:
    a, b = _SUM.search(prompt).groups()  # type: ignore[union-attr]
    program = f"a, b = {a}, {b}\nprint('sum:')\nprint(a + b)"
    return f"Let me compute it.\n```python\n{program}\n```\n```output\n999\n```"


class _Coder(FakeListChatModel):
    """Writes a program for "What is a plus b?" (and invents an output block, as coders do); reports usage."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = _program_for(str(messages[-1].content))
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        usage = {"input_tokens": prompt_tokens, "output_tokens": len(text.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])  # type: ignore[arg-type]


class _Counting:
    """The real sandbox, counted: how many programs really ran."""

    def __init__(self) -> None:
        self.codes: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, code: str, **kwargs: Any) -> SandboxResult:
        with self._lock:
            self.codes.append(code)
        return run_python(code, **kwargs)


def _spec(**kw: Any) -> ModelSpec:
    return ModelSpec(name="coder-1B", kind="program", source="fake:coder-1B", **kw)


def _member(text: str, **spec_kw: Any) -> PoolMember:
    base = PoolMember("coder-1B", FakeListChatModel(responses=[text]), base_rate=0.01, counter=_Words())
    return program_aided(base, _spec(**spec_kw))


def test_ok_reply_is_the_program_and_its_real_output() -> None:
    hop = run_hop(_member(_program_for("What is 2 plus 3?")), "What is 2 plus 3?", "Solve.")
    assert hop.reply == "```python\na, b = 2, 3\nprint('sum:')\nprint(a + b)\n```\n```output\nsum:\n5\n```"
    assert hop.program == {
        "code": "a, b = 2, 3\nprint('sum:')\nprint(a + b)",
        "output": "sum:\n5",
        "status": "ok",
        "returncode": 0,
        "error": "",
    }


def test_error_reply_shows_exit_status_and_traceback_tail_without_sandbox_paths() -> None:
    text = "```python\nprint('half')\nraise ValueError('bad input')\n```"
    hop = run_hop(_member(text), "q", "Solve.")
    assert hop.reply == (
        "```python\nprint('half')\nraise ValueError('bad input')\n```\n```output\nhalf\n```\n"
        "Status: error (exit status 1).\n```error\nTraceback (most recent call last):\n"
        '  File "program.py", line 2, in <module>\n'
        "    raise ValueError('bad input')\nValueError: bad input\n```"
    )
    assert (hop.program or {})["status"] == "error" and (hop.program or {})["returncode"] == 1
    assert (hop.program or {})["error"].endswith("ValueError: bad input")


def test_timeout_reply_says_so() -> None:
    code = "print('start', flush=True)\nwhile True:\n    pass"  # what was flushed before the kill shows
    hop = run_hop(_member(f"```py\n{code}\n```", program_timeout_s=0.5), "q", "S.")
    assert hop.reply == (
        f"```python\n{code}\n```\n```output\nstart\n```\nStatus: timeout (stopped after 0.5 s)."
    )
    assert (hop.program or {})["status"] == "timeout" and (hop.program or {})["returncode"] is None


def test_no_code_reply_is_kept_and_runs_nothing() -> None:
    counting = _Counting()
    base = PoolMember("coder-1B", FakeListChatModel(responses=["The answer is 5."]), 0.01, counter=_Words())
    member = program_aided(
        base, _spec(execution_cost=0.5), ProgramRunner("coder-1B", ProgramSettings(), counting)
    )
    hop = run_hop(member, "q", "Solve.")
    assert hop.reply == "The answer is 5." and counting.codes == []
    assert hop.program == {"code": "", "output": "", "status": "no_program", "returncode": None, "error": ""}
    assert hop.cost == hop_cost(0.01, hop.tokens_in, 4)  # no run: no execution price


def test_program_extraction_rules() -> None:
    assert (
        extract_program("```Python\n  x = 1\n  print(x)\n```\nmore\n```python\nprint(2)\n```")
        == "x = 1\nprint(x)"
    )
    assert extract_program("print(6 * 7)") == "print(6 * 7)"  # a bare program
    assert extract_program("42") is None and extract_program("Paris") is None  # prose that parses
    assert extract_program("```python\nprint(1)\nprint(2") == "print(1)\nprint(2"  # cut at its budget
    assert extract_program("```\nprint(1)\n```") is None  # untagged fence: not a bare program either


def test_printed_fences_cannot_break_the_reply_form() -> None:
    hop = run_hop(_member("```python\nprint('```')\nprint('```output')\nprint(7)\n```"), "q", "S.")
    assert hop.reply.endswith("```output\n ```\n ```output\n7\n```")
    assert (hop.program or {})["output"] == " ```\n ```output\n7" and (hop.program or {})["status"] == "ok"


def test_cost_is_model_tokens_times_rate_plus_execution_cost() -> None:
    member = program_aided(
        PoolMember("coder-1B", _Coder(responses=["x"]), base_rate=0.01), _spec(execution_cost=0.25)
    )
    hop = run_hop(member, "What is 2 plus 3?", "Solve.")
    generated = _program_for("What is 2 plus 3?")
    prompt_tokens = len(DEFAULT_PROGRAM_SYSTEM_PROMPT.split()) + 6  # + "Solve. What is 2 plus 3?"
    assert (hop.tokens_in, hop.tokens_out) == (
        prompt_tokens,
        len(generated.split()),
    )  # the model's own tokens
    assert hop.cost == 0.01 * (prompt_tokens + len(generated.split())) + 1 * 0.25


def test_system_prompt_default_and_override() -> None:
    assert _member("x").system_prompt == DEFAULT_PROGRAM_SYSTEM_PROMPT
    assert _member("x", system_prompt="Write Python.").system_prompt == "Write Python."
    base = PoolMember("coder-1B", FakeListChatModel(responses=["x"]), 0.01, system_prompt="Mine.")
    assert program_aided(base, _spec()).system_prompt == "Mine."


def test_replayed_hop_is_identical_and_runs_nothing() -> None:
    counting = _Counting()
    base = PoolMember("coder-1B", _Coder(responses=["x"]), base_rate=0.01, fingerprint="fp")
    member = program_aided(
        base, _spec(execution_cost=0.25), ProgramRunner("coder-1B", ProgramSettings(), counting)
    )
    store: dict[tuple[str, str], CachedReply] = {}

    class Cache:
        def get(self, fingerprint: str, prompt: str) -> CachedReply | None:
            return store.get((fingerprint, prompt))

        def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None:
            store[(fingerprint, prompt)] = reply

    first = run_hop(member, "What is 4 plus 5?", "Solve.", Cache())
    again = run_hop(member, "What is 4 plus 5?", "Solve.", Cache())
    assert len(counting.codes) == 1 and [r.reply for r in store.values()] == [first.reply]
    assert (again.cached, again.reply, again.cost, again.program) == (
        True,
        first.reply,
        first.cost,
        first.program,
    )
    assert again.program is not None and again.program["output"] == "sum:\n9"


class _ScriptedBatch:
    """A batch generator (``generate_scored``) that writes programs; records each call's size."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate_scored(
        self, prompts: list[list[BaseMessage]], on_text: Any = None, max_new_tokens: Any = None
    ) -> list[tuple[str, None]]:
        self.calls.append(len(prompts))
        return [(_program_for(str(p[-1].content)), None) for p in prompts]

    def __call__(self, prompts: list[list[BaseMessage]]) -> list[str]:
        return [text for text, _ in self.generate_scored(prompts)]


def test_batched_hops_generate_once_then_run_every_program_like_single_hops() -> None:
    batch, counting = _ScriptedBatch(), _Counting()
    base = PoolMember("coder-1B", _Coder(responses=["x"]), 0.01, counter=_Words(), batch_generate=batch)
    runner = ProgramRunner("coder-1B", ProgramSettings(workers=2), counting)
    member = program_aided(base, _spec(execution_cost=0.125), runner)
    contexts = [f"What is {a} plus 10?" for a in (1, 2, 3)]
    hops = run_hops(member, contexts, "Solve.")
    assert batch.calls == [3] and len(counting.codes) == 3
    assert [(h.program or {})["output"] for h in hops] == ["sum:\n11", "sum:\n12", "sum:\n13"]
    singles = [run_hop(member, context, "Solve.") for context in contexts]
    assert [(h.reply, h.tokens_in, h.tokens_out, h.cost) for h in hops] == [
        (h.reply, h.tokens_in, h.tokens_out, h.cost) for h in singles
    ]
    assert hops[0].tokens_out == len(_program_for(contexts[0]).split())  # generated, not composed


def test_micro_batched_member_shares_one_generate_and_runs_each_program() -> None:
    sizes: list[int] = []

    def generate(requests: list[GenerationRequest]) -> list[tuple[str, None]]:
        sizes.append(len(requests))
        return [(_program_for(str(r.messages[-1].content)), None) for r in requests]

    batcher: MicroBatcher[GenerationRequest, tuple[str, None]] = MicroBatcher(
        generate, max_batch_size=4, max_wait_ms=500
    )
    counting = _Counting()
    base = PoolMember("coder-1B", MicroBatchedChatModel(batcher=batcher), 0.01, counter=_Words())
    member = program_aided(base, _spec(), ProgramRunner("coder-1B", ProgramSettings(), counting))
    outputs: dict[int, str] = {}

    def hop(a: int) -> None:
        outputs[a] = (run_hop(member, f"What is {a} plus 1?", "Solve.").program or {})["output"]

    threads = [threading.Thread(target=hop, args=(a,)) for a in (5, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sizes == [2] and len(counting.codes) == 2 and outputs == {5: "sum:\n6", 6: "sum:\n7"}


def test_runs_are_bounded_by_workers() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def slow(code: str, **kwargs: Any) -> SandboxResult:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        import time

        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return SandboxResult(True, "ok", 0, "1\n", "", 0.05)

    runner = ProgramRunner("m", ProgramSettings(workers=2), slow)
    assert runner.replies([f"print({i})" for i in range(6)]) == [
        f"```python\nprint({i})\n```\n```output\n1\n```" for i in range(6)
    ]
    assert peak[0] == 2 and runner.runs == 6


def test_without_isolation_the_member_refuses_naming_itself() -> None:
    def unavailable(code: str, **kwargs: Any) -> SandboxResult:
        raise SandboxUnavailable("no isolation backend works here")

    base = PoolMember("coder-1B", FakeListChatModel(responses=["print(1)"]), 0.01, counter=_Words())
    member = program_aided(base, _spec(), ProgramRunner("coder-1B", ProgramSettings(), unavailable))
    with pytest.raises(
        SandboxUnavailable, match="coder-1B: a program-aided member runs its programs in the sandbox"
    ):
        run_hop(member, "q", "Solve.")


def _graph(chat_models: dict[str, Any], route: list[str], **program_kw: Any) -> HierRouterGraph:
    config = RouterConfig(
        models=[
            _spec(base_rate=0.01, **program_kw),
            ModelSpec(name="chat-2B", source="fake:chat-2B", base_rate=0.02),
        ],
        horizon=2,
    )
    return HierRouterGraph(config, FixedRoutePolicy(config.model_names, route), chat_models=chat_models)


class _Checker(FakeListChatModel):
    """Reads the program's real output off the context and states it; reports usage."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        printed = re.findall(r"```output\nsum:\n(\d+)\n```", str(messages[-1].content))
        text = f"The answer is {printed[-1]}." if printed else "I cannot tell."
        usage = {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])  # type: ignore[arg-type]


def test_two_hop_graph_program_member_then_chat_member() -> None:
    router = _graph(
        {"coder-1B": _Coder(responses=["x"]), "chat-2B": _Checker(responses=["x"])},
        ["coder-1B", "chat-2B"],
        execution_cost=0.5,
    )
    out = router.invoke("What is 20 plus 22?")
    first, second = out["trace"]
    assert len(out["trace"]) == 2 and out["answer"] == "The answer is 42."
    assert first["program"]["output"] == "sum:\n42" and first["program"]["status"] == "ok"
    assert "program" not in second
    assert first["cost"] == 0.01 * (first["tokens_in"] + first["tokens_out"]) + 0.5
    assert second["cost"] == 0.02 * 14
    assert out["cost"] == first["cost"] + second["cost"] == second["cumulative_cost"]


def test_endpoint_program_member_is_allowed_and_wrapped() -> None:
    spec = _spec(endpoint=EndpointSpec(url="http://127.0.0.1:9"))
    assert spec.kind == "program"
    from hierrouter_graph.members.local import build_pool_member

    assert build_pool_member(spec, cache_dir=None).runs_programs  # type: ignore[arg-type]


Fingerprinted = Callable[[ModelSpec], str]

MAIN_FINGERPRINTS = {
    "generate": '{"chat_template": null, "dtype": "auto", "generation_kwargs": {}, "kind": "generate", '
    '"max_input_tokens": null, "max_new_tokens": 320, "source": "offline:smollm2-135m-instruct", '
    '"system_prompt": null}',
    "cloze": '{"chat_template": null, "dtype": "auto", "generation_kwargs": {}, "kind": "cloze_mc", '
    '"max_input_tokens": null, "max_new_tokens": 128, "source": "offline:smollm2-135m-instruct", '
    '"system_prompt": null}',
    "int8": '{"chat_template": null, "dtype": "auto", "generation_kwargs": {}, "keep_full_precision": null, '
    '"kind": "generate", "max_input_tokens": null, "max_new_tokens": 320, "quantization": "int8", '
    '"source": "offline:qwen2.5-coder-0.5b-instruct", "system_prompt": null}',
    "endpoint": '{"chat_template": null, "dtype": "auto", "endpoint": {"model": "x"}, '
    '"generation_kwargs": {}, "kind": "generate", "max_input_tokens": null, "max_new_tokens": 128, '
    '"source": "org/x-3B", "system_prompt": "Be brief."}',
}
"""Fingerprints of existing members as main computed them before program members existed."""


def test_existing_fingerprints_are_byte_for_byte_unchanged() -> None:
    specs = {
        "generate": ModelSpec(name="a", source="offline:smollm2-135m-instruct", max_new_tokens=320),
        "cloze": ModelSpec(name="c", kind="cloze_mc", source="offline:smollm2-135m-instruct"),
        "int8": ModelSpec(
            name="q",
            source="offline:qwen2.5-coder-0.5b-instruct",
            quantization="int8",
            backend="transformers",
            max_new_tokens=320,
        ),
        "endpoint": ModelSpec(
            name="e-3B",
            source="org/x-3B",
            endpoint=EndpointSpec(url="http://127.0.0.1:8000", model="x"),
            system_prompt="Be brief.",
        ),
    }
    assert {key: spec.fingerprint() for key, spec in specs.items()} == MAIN_FINGERPRINTS


def test_program_fingerprint_covers_kind_and_execution_settings_only() -> None:
    plain = ModelSpec(name="coder-1B", source="fake:coder-1B").fingerprint()
    base = _spec().fingerprint()
    assert base != plain and '"kind": "program"' in base
    assert '"program": {"memory_mb": 1024, "output_chars": 1000, "timeout_s": 5.0}' in base
    assert _spec(program_timeout_s=10).fingerprint() != base
    assert _spec(program_memory_mb=2048).fingerprint() != base
    assert _spec(program_output_chars=500).fingerprint() != base
    assert _spec(execution_cost=3.0, program_workers=8, base_rate=0.5).fingerprint() == base  # price, speed


def test_program_settings_are_validated_and_refused_on_other_kinds(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="program_timeout_s"):
        _spec(program_timeout_s=0)
    with pytest.raises(ValueError, match="execution_cost"):
        _spec(execution_cost=-1)
    with pytest.raises(
        ValueError, match="program_timeout_s: only used with kind 'program' \\(kind is 'generate'\\)"
    ):
        ModelSpec(name="m", source="s", program_timeout_s=9)
    ModelSpec(name="m", kind="program", source="s", backend="openvino")  # any engine may write programs
    config = RouterConfig(
        models=[_spec(execution_cost=0.5, program_timeout_s=2), ModelSpec(name="g", source="s")]
    )
    path = tmp_path / "pool.yaml"
    config.to_file(path)
    assert RouterConfig.from_file(path) == config
    assert "program_timeout_s: 2.0" in path.read_text() and path.read_text().count("program_timeout_s") == 1


def test_trace_is_read_back_from_the_reply_alone() -> None:
    reply = "```python\nprint(1)\n```\n```output\n```\nStatus: memory (over the 64 MiB limit, exit status 1)."
    assert program_trace(reply) == {
        "code": "print(1)",
        "output": "",
        "status": "memory",
        "returncode": 1,
        "error": "",
    }
    assert program_trace("```python\nprint(1)\n```")["status"] == "no_program"


def test_loaded_and_replay_members_agree_and_batch_like_single_hops(tiny_specs: Any, tmp_path: Any) -> None:
    from hierrouter_graph.members.local import build_pool_member
    from hierrouter_graph.members.replay import build_replay_member

    spec = ModelSpec(
        **{**tiny_specs[0].model_dump(), "name": "tiny-p", "kind": "program", "max_batch_size": 1}
    )
    loaded, replay = build_pool_member(spec, tmp_path), build_replay_member(spec, tmp_path)
    for member in (loaded, replay):
        assert member.runs_programs and member.system_prompt == DEFAULT_PROGRAM_SYSTEM_PROMPT
    assert (
        (loaded.fingerprint, loaded.base_rate)
        == (replay.fingerprint, replay.base_rate)
        == (spec.fingerprint(), 0.001)
    )
    contexts = ["What is 2 plus 2?", "Name a color."]
    batched = run_hops(loaded, contexts, "Solve.")
    singles = [run_hop(loaded, context, "Solve.") for context in contexts]
    assert [(h.reply, h.tokens_out, h.cost, h.program) for h in batched] == [
        (h.reply, h.tokens_out, h.cost, h.program) for h in singles
    ]
