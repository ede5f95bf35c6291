"""``python -m hierrouter_graph serve`` as a real process on a free loopback port, driven by the
real ``openai`` client and by ``langchain_openai.ChatOpenAI``; and a thread that survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI

from bench.local_server import free_port, stop
from hierrouter_graph import ModelSpec, RouterConfig

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
QUERY = "What is seven times six?"

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket]


@contextmanager
def serve(config_file: Path, db: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The server as users start it; yields its base URL once ``/health`` answers."""
    port = free_port()
    command = [sys.executable, "-m", "hierrouter_graph", "serve", "--config", str(config_file)]
    command += ["--port", str(port), "--threads-db", str(db), "--max-concurrency", "4"]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **OFFLINE_ENV}, stdout=sink, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited early:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield base, process
    finally:
        stop(process, timeout=20)


def _config(specs: list[ModelSpec], root: Path, **update: object) -> Path:
    models = [spec.model_copy(update=update) for spec in specs]
    path = root / "router.yaml"
    RouterConfig(models=models, horizon=2, cache_dir=root / "cache").to_file(path)
    return path


@pytest.fixture(scope="module")
def server(tiny_specs: list[ModelSpec], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("openai-server")
    with serve(_config(tiny_specs, root), root / "threads.sqlite", root / "server.log") as (base, _):
        yield base


def test_openai_client_completion_and_stream(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="not-checked", max_retries=0)
    assert [m.id for m in client.models.list()] == ["hierrouter", "hierrouter:alpha=0.005"]

    completion = client.chat.completions.create(
        model="hierrouter", messages=[{"role": "user", "content": QUERY}]
    )
    ext = completion.model_extra["hierrouter"]  # type: ignore[index]
    replies = [hop["reply"] for hop in ext["trace"]]
    assert completion.choices[0].message.content == replies[-1]
    assert len(ext["route"]) == 2 and set(ext["route"]) <= {"tiny-a", "tiny-b"}
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(hop["tokens_in"] for hop in ext["trace"])
    assert completion.usage.completion_tokens == sum(hop["tokens_out"] for hop in ext["trace"])

    stream = client.chat.completions.create(
        model="hierrouter",
        messages=[{"role": "user", "content": QUERY}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 4
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == completion.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_client_sees_bad_requests_as_400(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="not-checked", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad_alpha:
        client.chat.completions.create(
            model="hierrouter:alpha=0.5", messages=[{"role": "user", "content": QUERY}]
        )
    assert bad_alpha.value.status_code == 400
    assert bad_alpha.value.body["param"] == "model"  # type: ignore[index]
    assert bad_alpha.value.code == "unsupported_alpha"
    with pytest.raises(openai.BadRequestError) as blank:
        client.chat.completions.create(model="hierrouter", messages=[{"role": "user", "content": " "}])
    assert blank.value.body["param"] == "messages[0].content"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUERY}])
    assert unknown.value.code == "model_not_found"
    ok = client.chat.completions.create(model="hierrouter", messages=[{"role": "user", "content": QUERY}])
    assert ok.choices[0].message.content


def test_langchain_chat_openai_invoke_and_stream(server: str) -> None:
    chat = ChatOpenAI(base_url=f"{server}/v1", api_key="not-checked", model="hierrouter", max_retries=0)
    message = chat.invoke(QUERY)
    ext = message.response_metadata.get("hierrouter") or message.additional_kwargs.get("hierrouter")
    raw = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": "hierrouter", "messages": [{"role": "user", "content": QUERY}]},
        timeout=120,
    ).json()
    assert message.content == raw["choices"][0]["message"]["content"]
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == raw["usage"]["prompt_tokens"]
    assert ext is None or ext["route"] == raw["hierrouter"]["route"]

    streaming = ChatOpenAI(
        base_url=f"{server}/v1", api_key="not-checked", model="hierrouter", max_retries=0, stream_usage=True
    )
    pieces = list(streaming.stream(QUERY))
    assert all(isinstance(p, AIMessageChunk) for p in pieces)
    assert "".join(str(p.content) for p in pieces) == message.content
    assert sum(1 for p in pieces if p.content) > 4
    total = pieces[0]
    for piece in pieces[1:]:
        total = total + piece  # type: ignore[assignment]
    assert total.usage_metadata is not None
    assert total.usage_metadata["total_tokens"] == raw["usage"]["total_tokens"]


def test_thread_survives_kill_9_mid_run(tiny_specs: list[ModelSpec], tmp_path: Path) -> None:
    """Turn 1 answered; turn 2 killed (SIGKILL) while its first hop streams; restart on the same file."""
    config = _config(tiny_specs, tmp_path, max_new_tokens=400)  # long hops: the kill lands mid-run
    db, log = tmp_path / "threads.sqlite", tmp_path / "server.log"
    ask = {"model": "hierrouter", "thread_id": "durable-1"}
    with serve(config, db, log) as (base, process):
        first = httpx.post(
            f"{base}/v1/chat/completions",
            json={**ask, "messages": [{"role": "user", "content": "Turn one?"}]},
            timeout=300,
        )
        assert first.status_code == 200
        answer_one = first.json()["choices"][0]["message"]["content"]
        body = {**ask, "stream": True, "messages": [{"role": "user", "content": "Turn two?"}]}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    os.kill(process.pid, signal.SIGKILL)  # a token of turn two's first hop is out
                    break
        assert process.wait(timeout=30) == -signal.SIGKILL

    with serve(config, db, log) as (base, _):
        kept = httpx.get(f"{base}/v1/threads/durable-1", timeout=30).json()["messages"]
        assert kept[:2] == [
            {"role": "user", "content": "Turn one?"},
            {"role": "assistant", "content": answer_one},
        ]
        assert kept[2:] == [{"role": "user", "content": "Turn two?"}]  # asked, never answered
        third = httpx.post(
            f"{base}/v1/chat/completions",
            json={**ask, "messages": [{"role": "user", "content": "Turn three?"}]},
            timeout=300,
        )
        assert third.status_code == 200
        after = httpx.get(f"{base}/v1/threads/durable-1", timeout=30).json()["messages"]
        assert [m["role"] for m in after] == ["user", "assistant", "user", "user", "assistant"]
        assert [m["content"] for m in after if m["role"] == "user"] == [
            "Turn one?",
            "Turn two?",
            "Turn three?",
        ]
