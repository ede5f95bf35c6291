"""The OpenVINO engine: backend resolution, fingerprints, spec validation (unit), and a tiny
random Qwen2 converted to an IR and run by openvino-genai against transformers (integration)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import HumanMessage
from pydantic import ValidationError

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.confidence import Confidence, confidence_features
from hierrouter_graph.members import engine_choice
from hierrouter_graph.members.engine_choice import BackendUnavailableError, resolve_backend
from hierrouter_graph.members.openvino_engine import cpu_properties, openvino_cache_gb, openvino_threads

QWEN = "offline:qwen2.5-coder-0.5b-instruct"
OLD_QWEN_FINGERPRINT = (
    '{"chat_template": null, "dtype": "auto", "generation_kwargs": {}, "keep_full_precision": null, '
    '"kind": "generate", "max_input_tokens": null, "max_new_tokens": 320, "quantization": "int8", '
    '"source": "offline:qwen2.5-coder-0.5b-instruct", "system_prompt": null}'
)
"""The default Qwen member's fingerprint before the OpenVINO engine existed (records key on it)."""


@pytest.fixture()
def cpu_with_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine_choice, "openvino_installed", lambda: True)


def _qwen(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"name": "q", "source": QWEN, "quantization": "int8", "max_new_tokens": 320, **fields}
    )


# ------------------------------------------------------------------------------ resolution


def test_auto_picks_openvino_for_the_offline_qwen_members_on_cpu(cpu_with_openvino: None) -> None:
    assert resolve_backend(_qwen()) == "openvino"
    assert resolve_backend(_qwen(source="offline:qwen2.5-coder-1.5b-instruct")) == "openvino"


def test_auto_keeps_transformers_elsewhere(cpu_with_openvino: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend(_qwen(source="offline:smollm2-135m-instruct")) == "transformers"
    assert resolve_backend(_qwen(kind="cloze_mc")) == "transformers"
    assert resolve_backend(_qwen(keep_full_precision=["down_proj"])) == "transformers"
    assert resolve_backend(_qwen(generation_kwargs={"repetition_penalty": 1.1})) == "transformers"
    assert resolve_backend(_qwen(device="cuda")) == "transformers"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU: 'auto' device is CUDA
    assert resolve_backend(_qwen()) == "transformers"


def test_auto_falls_back_to_transformers_without_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino_genai" else real(name, *a)
    )
    assert not engine_choice.openvino_installed()
    assert resolve_backend(_qwen()) == "transformers"
    expected = (
        r"q: backend 'openvino' needs the python modules openvino_genai; "
        r"install them with: pip install 'hierrouter-graph\[openvino\]'"
    )
    with pytest.raises(BackendUnavailableError, match=expected):
        resolve_backend(_qwen(backend="openvino"))


def test_explicit_openvino_refuses_an_accelerator(cpu_with_openvino: None) -> None:
    expected = "runs on the CPU here, but device 'cuda:1' resolved to 'cuda:1'"
    with pytest.raises(BackendUnavailableError, match=expected):
        resolve_backend(_qwen(backend="openvino", device="cuda:1"))
    assert resolve_backend(_qwen(backend="transformers")) == "transformers"


# ------------------------------------------------------------------------------ validation


def test_backend_must_be_a_known_engine() -> None:
    with pytest.raises(ValidationError) as error:
        _qwen(backend="onnx")
    text = str(error.value)
    assert "backend" in text and "'auto', 'transformers' or 'openvino'" in text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "cloze_mc"}, "kind: not supported with backend 'openvino'"),
        ({"adapter": "/some/lora"}, "adapter: not supported with backend 'openvino'"),
        ({"keep_full_precision": ["down_proj"]}, "keep_full_precision: not supported with backend"),
        ({"generation_kwargs": {"do_sample": True}}, "generation_kwargs: not supported with backend"),
        (
            {"endpoint": {"url": "http://127.0.0.1:8000"}, "quantization": "none", "base_rate": 0.1},
            "endpoint: not supported with backend 'openvino'",
        ),
    ],
)
def test_explicit_openvino_refuses_what_it_cannot_serve(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _qwen(backend="openvino", **fields)


# ------------------------------------------------------------------------------ fingerprints


def test_transformers_fingerprints_stay_byte_for_byte(cpu_with_openvino: None) -> None:
    assert _qwen(backend="transformers").fingerprint() == OLD_QWEN_FINGERPRINT


def test_openvino_fingerprint_names_engine_precision_and_resolved_dtype(
    cpu_with_openvino: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hierrouter_graph.members import quantize as quantize

    monkeypatch.setattr(quantize, "cpu_has_native_bf16", lambda: True)
    engine = json.loads(_qwen().fingerprint())["engine"]
    assert engine == {
        "backend": "openvino",
        "weights": "int8",
        "inference_dtype": "bfloat16",
        "kv_cache": "u8",
    }
    monkeypatch.setattr(quantize, "cpu_has_native_bf16", lambda: False)
    engine = json.loads(_qwen(quantization="none").fingerprint())["engine"]
    assert engine == {
        "backend": "openvino",
        "weights": "float32",
        "inference_dtype": "float32",
        "kv_cache": "u8",
    }
    engine = json.loads(_qwen(quantization="none", dtype="float32").fingerprint())["engine"]
    assert engine == {
        "backend": "openvino",
        "weights": "float32",
        "inference_dtype": "float32",
        "kv_cache": "float32",
    }
    assert _qwen().fingerprint() != OLD_QWEN_FINGERPRINT
    old = json.loads(OLD_QWEN_FINGERPRINT)
    assert {k: v for k, v in json.loads(_qwen().fingerprint()).items() if k != "engine"} == old


# ------------------------------------------------------------------------------ small parts


def test_confidence_without_entropy_is_known_with_neutral_entropy() -> None:
    confidence = Confidence(-0.25, None)
    assert confidence_features(confidence) == (-0.25, 0.0, 1.0)
    assert Confidence.from_any(confidence.as_dict()) == confidence
    with pytest.raises(ValueError, match="mean_logprob must be finite"):
        Confidence(float("nan"), None)


def test_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIERROUTER_OPENVINO_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert openvino_threads() == 1
    monkeypatch.setenv("HIERROUTER_OPENVINO_THREADS", "2")
    assert openvino_threads() == 2
    monkeypatch.setenv("HIERROUTER_OPENVINO_THREADS", "two")
    expected = r"\$HIERROUTER_OPENVINO_THREADS: expected a whole number of threads, got 'two'"
    with pytest.raises(ValueError, match=expected):
        openvino_threads()


def test_kv_cache_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIERROUTER_OPENVINO_CACHE_GB", raising=False)
    assert openvino_cache_gb() == 1
    monkeypatch.setenv("HIERROUTER_OPENVINO_CACHE_GB", "3")
    assert openvino_cache_gb() == 3
    monkeypatch.setenv("HIERROUTER_OPENVINO_CACHE_GB", "2.5")
    with pytest.raises(ValueError, match=r"CACHE_GB: expected a whole number of GB, got '2.5'"):
        openvino_cache_gb()
    monkeypatch.setenv("HIERROUTER_OPENVINO_CACHE_GB", "0")
    with pytest.raises(ValueError, match=r"CACHE_GB: expected >= 1 GB, got 0"):
        openvino_cache_gb()


def test_explicit_threads_are_not_pinned_and_numerics_are_explicit() -> None:
    exact = {"weights": "int8", "inference_dtype": "float32", "kv_cache": "float32"}
    assert cpu_properties(exact, 1) == {
        "INFERENCE_PRECISION_HINT": "f32",
        "KV_CACHE_PRECISION": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
        "INFERENCE_NUM_THREADS": 1,
        "ENABLE_CPU_PINNING": False,
    }
    fast = {"weights": "int8", "inference_dtype": "bfloat16", "kv_cache": "u8"}
    assert cpu_properties(fast, 0) == {"INFERENCE_PRECISION_HINT": "bf16", "KV_CACHE_PRECISION": "u8"}


# ------------------------------------------------------------------------------ integration

needs_openvino = pytest.mark.skipif(
    not engine_choice.openvino_installed() or importlib.util.find_spec("nncf") is None,
    reason="the openvino extra is not installed (pip install 'hierrouter-graph[openvino]')",
)
PROMPTS = [
    "What is seven times six?",
    "def add(a, b):",
    "Describe the problem in detail, then plan how you would solve it step by step.",
    "x",
    "Which planet is largest? A. Mars B. Jupiter",
]


def _spec(folder: Path, backend: str, **fields: object) -> ModelSpec:
    fixed = {"name": f"tiny-{backend}", "source": str(folder), "base_rate": 0.001, "max_new_tokens": 24}
    return ModelSpec.model_validate({**fixed, "dtype": "float32", "backend": backend, **fields})


@pytest.mark.integration
@needs_openvino
def test_float32_ir_replies_equal_transformers_token_for_token(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    from hierrouter_graph.members.local import build_pool_member

    folder = tiny_folders["tiny-a"]
    torch_member = build_pool_member(_spec(folder, "transformers"), tmp_path)
    ov_member = build_pool_member(_spec(folder, "openvino"), tmp_path)
    assert (tmp_path / "openvino" / "tiny-a-float32" / "hierrouter-openvino.json").is_file()
    prompts = [[HumanMessage(text)] for text in PROMPTS]
    budgets = [24, 5, 24, 24, 11]  # per-prompt stage budgets, as a micro-batch mixes them
    torch_generate: Any = torch_member.batch_generate
    generator: Any = ov_member.batch_generate
    expected = torch_generate.generate_scored(prompts, max_new_tokens=budgets)
    batched = generator.generate_scored(prompts, max_new_tokens=budgets)
    one_by_one = [
        generator.generate_scored([p], max_new_tokens=[b])[0] for p, b in zip(prompts, budgets, strict=True)
    ]
    assert [text for text, _ in batched] == [text for text, _ in expected]
    # a micro-batch must not change the reply; its float32 log-probs may differ in the last bits
    # (the CPU plugin picks kernels by batch shape and instruction set), never more than that
    assert [text for text, _ in one_by_one] == [text for text, _ in batched]
    for (_, alone), (_, together) in zip(one_by_one, batched, strict=True):
        assert alone is not None and together is not None
        assert together.mean_logprob == pytest.approx(alone.mean_logprob, rel=1e-5, abs=1e-6)
    for (_, want), (_, got) in zip(expected, batched, strict=True):
        assert want is not None and got is not None and got.mean_entropy is None
        assert got.mean_logprob == pytest.approx(want.mean_logprob, abs=1e-4)
    # token ids themselves, and the counts the hop prices with
    counter = ov_member.counter
    assert counter is not None
    ids = [generator.tokenizer(counter.render_prompt(p))["input_ids"] for p in prompts]
    assert [len(row) for row in ids] == [counter.count_prompt(p) for p in prompts]
    produced = generator.generate_ids(ids, [24] * len(ids))
    for row, (tokens, _) in zip(ids, produced, strict=True):
        reference = torch_generate.model.generate(
            torch.tensor([row]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=torch_generate.generate_kwargs["eos_token_id"],
            pad_token_id=generator.tokenizer.pad_token_id,
        )
        assert tokens == reference[0, len(row) :].tolist()
    # one invoke through the micro-batched chat model: the same reply and its confidence
    reply = ov_member.chat_model.invoke(prompts[0])
    assert reply.content == batched[0][0]
    assert reply.response_metadata["confidence"]["mean_entropy"] is None


@pytest.mark.integration
@needs_openvino
def test_int8_ir_and_auto_and_prepare(
    tiny_folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hierrouter_graph.members import quantize as quantize
    from hierrouter_graph.members.local import build_pool_member, describe_backend
    from hierrouter_graph.members.prepare import prepare_models

    folder = tiny_folders["tiny-b"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # 'dtype: auto' is float32 on an avx2-only CPU and bf16 on avx512_bf16: pin the detector so the
    # test asserts the same numerics on every CI machine.
    monkeypatch.setattr(quantize, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(engine_choice, "AUTO_OPENVINO_SOURCES", frozenset({str(folder)}))
    torn = tmp_path / "openvino" / "tiny-b-int8"
    torn.mkdir(parents=True)
    (torn / "openvino_model.xml").write_text("half-written")  # no completion marker: never trusted
    auto = _spec(folder, "auto", quantization="int8", name="tiny-auto")
    assert resolve_backend(auto) == "openvino"
    prepared = prepare_models(RouterConfig(models=[auto], cache_dir=tmp_path), jobs=1)
    assert prepared[0].openvino == (str(torn),)
    assert (torn / "hierrouter-openvino.json").is_file()
    assert json.loads((torn / "hierrouter-openvino.json").read_text())["weights"] == "int8"
    assert describe_backend(auto, tmp_path).startswith("openvino cpu weights=int8 dtype=float32")
    member = build_pool_member(auto, tmp_path)
    torch_member = build_pool_member(_spec(folder, "transformers"), tmp_path)
    prompts = [[HumanMessage(text)] for text in PROMPTS]
    got = member.batch_generate(prompts)  # type: ignore[misc]
    want = torch_member.batch_generate(prompts)  # type: ignore[misc]
    assert len(got) == len(PROMPTS) and all(isinstance(text, str) for text in got)
    # int8 weights on a random 2-layer model: near-tie tokens may flip; the agreement is measured, not assumed
    agreement = sum(a == b for a, b in zip(got, want, strict=True))
    print(f"int8 IR vs transformers float32: {agreement}/{len(PROMPTS)} replies identical")


_AFFINITY_SCRIPT = """
import os, sys, threading, time
from pathlib import Path
from langchain_core.messages import HumanMessage
from hierrouter_graph import ModelSpec
from hierrouter_graph.members.local import build_pool_member
spec = ModelSpec(name="tiny", source=sys.argv[1], base_rate=0.001, max_new_tokens=64, dtype="float32",
                 backend="openvino")
member = build_pool_member(spec, Path(sys.argv[2]))
caller, seen, done = threading.get_native_id(), set(), threading.Event()
def watch():  # the generating thread's cores, sampled while it generates
    while not done.is_set():
        seen.add(tuple(sorted(os.sched_getaffinity(caller))))
        time.sleep(0.0002)
watcher = threading.Thread(target=watch)
watcher.start()
for _ in range(5):
    member.batch_generate([[HumanMessage("Describe the problem in detail, then plan a solution.")]])
done.set()
watcher.join()
print(sorted(seen))
"""


@pytest.mark.integration
@needs_openvino
def test_a_single_threaded_pipeline_never_binds_its_thread_to_one_core(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    """OpenVINO binds a 1-thread pipeline's inferring thread to core 0 in every process, so two
    1-thread recorders shared one core (``cpu_properties`` turns the binding off). The generating
    thread's cores are sampled while it generates: they must stay all the process was given."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HIERROUTER_OPENVINO_THREADS": "1"}
    ran = subprocess.run(
        [sys.executable, "-c", _AFFINITY_SCRIPT, str(tiny_folders["tiny-a"]), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip().splitlines()[-1] == str([tuple(sorted(os.sched_getaffinity(0)))])
