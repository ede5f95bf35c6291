"""The CPU fast path: selective int8, its fingerprint, and dtype 'auto' per CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from hierrouter_graph.members import quantize as quantize
from hierrouter_graph.members.local import describe_backend, load_causal_lm
from hierrouter_graph.members.sources import resolve_dtype
from hierrouter_graph.model_spec import EndpointSpec, ModelSpec

FULL = "torch.nn.modules.linear"
INT8 = "torch.ao.nn.quantized.dynamic.modules.linear"  # its class is also named "Linear"


def test_int8_keeps_the_named_modules_in_full_precision(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    spec = ModelSpec(name="q", source=str(tiny_folders["tiny-a"]), quantization="int8")
    loaded = load_causal_lm(spec, tmp_path)
    kinds = {name: type(module).__module__ for name, module in loaded.model.named_modules()}
    down = [name for name in kinds if name.endswith("down_proj")]
    gate = [name for name in kinds if name.endswith("gate_proj")]
    assert down and all(kinds[name] == FULL for name in down)
    assert gate and all(kinds[name] == INT8 for name in gate)
    assert loaded.backend == "transformers cpu float32 int8(kept: down_proj)"
    ids = loaded.tokenizer("numbers 1 2 3", return_tensors="pt")
    out = loaded.model.generate(**ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_explicit_keep_list_overrides_the_default(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    spec = ModelSpec(
        name="q", source=str(tiny_folders["tiny-a"]), quantization="int8", keep_full_precision=("q_proj",)
    )
    model = load_causal_lm(spec, tmp_path).model
    kinds = {name: type(module).__module__ for name, module in model.named_modules()}
    assert all(kinds[n] == FULL for n in kinds if n.endswith("q_proj"))
    assert all(kinds[n] == INT8 for n in kinds if n.endswith("down_proj"))


SETTINGS = [{}, {"quantization": "int8"}, {"quantization": "int8", "keep_full_precision": ("q_proj",)}]


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_backend_is_described_without_loading_as_loading_names_it(
    tiny_folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict
) -> None:
    import transformers

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("describe_backend loaded weights")

    spec = ModelSpec(name="q", source=str(tiny_folders["tiny-b"]), **settings)
    with monkeypatch.context() as patch:
        patch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
        described = describe_backend(spec, tmp_path)
    assert described == load_causal_lm(spec, tmp_path).backend
    assert ("int8" in described) == ("quantization" in settings)


def test_quantization_is_in_the_fingerprint_only_when_set() -> None:
    plain = ModelSpec(name="a", source="x/y")
    assert "quantization" not in plain.fingerprint()  # recorded replies of full-precision members stay valid
    int8 = plain.model_copy(update={"quantization": "int8"})
    kept = plain.model_copy(update={"quantization": "int8", "keep_full_precision": ("lm_head",)})
    assert len({plain.fingerprint(), int8.fingerprint(), kept.fingerprint()}) == 3


def test_endpoints_cannot_be_quantized_locally() -> None:
    with pytest.raises(ValidationError, match="quantization"):
        ModelSpec(
            name="r",
            source="Qwen-1.5B",
            quantization="int8",
            endpoint=EndpointSpec(url="http://127.0.0.1:9"),
        )


def test_dtype_auto_on_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(quantize, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cpu", "int8") == torch.float32  # int8 kernels take float32
    with pytest.raises(ValueError, match="int8 on CPU runs float32"):
        resolve_dtype("bfloat16", "cpu", "int8")


def test_native_bf16_is_read_from_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(quantize, "Path", lambda _: cpuinfo)
    for flags, expected in (("fpu avx2 avx512f", False), ("fpu avx2 avx512_bf16", True), ("amx_bf16", True)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        quantize.cpu_has_native_bf16.cache_clear()
        assert quantize.cpu_has_native_bf16() is expected
    quantize.cpu_has_native_bf16.cache_clear()


def test_default_keep_list_per_architecture() -> None:
    assert quantize.int8_keep_modules("qwen2", None) == ("down_proj",)
    assert quantize.int8_keep_modules("some-new-arch", None) == ()
    assert quantize.int8_keep_modules("qwen2", ()) == ()
