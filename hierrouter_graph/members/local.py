"""Chat-model factory: ``ModelSpec`` → ``PoolMember`` over a local transformers pipeline.

The source is resolved by ``sources.py`` (built-in offline name, folder, GGUF or hub id), the
engine chosen by ``engine_choice.py``; the model is loaded once per process and wrapped as a pool
member — a chat model micro-batched over ``generation.BatchGenerator`` (or the OpenVINO engine),
a cloze scorer, or a program-aided member.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierrouter_graph.confidence import Confidence
from hierrouter_graph.cost import base_rate_from_param_count, param_count_from_name
from hierrouter_graph.device import resolve_device
from hierrouter_graph.members.adapters import adapter_view, base_parameter_count
from hierrouter_graph.members.engine_choice import resolve_backend
from hierrouter_graph.members.generation import BatchGenerator
from hierrouter_graph.members.pool import PoolMember, TokenizerCounter
from hierrouter_graph.members.sources import (
    ModelSourceError,
    builtin_names,
    resolve_dtype,
    resolve_model_folder,
)
from hierrouter_graph.model_spec import ModelSpec

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from hierrouter_graph.members.openvino_engine import OpenVINOGenerator

__all__ = [
    "build_pool_member",
    "load_causal_lm",
    "openvino_ir",
]

_TURN_END_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


@dataclass
class _LoadedLM:
    model: Any
    tokenizer: Any
    backend: str = "transformers"
    """What produced the replies, for record metadata: e.g. 'transformers cpu float32 int8(-down_proj)'."""


_LOADED: dict[tuple[str, str, str, str | None, str], _LoadedLM] = {}
_LOAD_LOCK = threading.Lock()


def _model_type(folder: Path | str) -> str:
    from transformers import AutoConfig

    return str(AutoConfig.from_pretrained(str(folder)).model_type)


def describe_backend(spec: ModelSpec, cache_dir: Path) -> str:
    """What ``load_causal_lm`` would load ``spec`` as here, without loading any weights: e.g.
    'transformers cpu float32 int8(kept: down_proj)'. Why: record metadata names the numerics
    that produced a record, and exporting one should not cost loading the whole pool."""
    from hierrouter_graph.members.quantize import int8_keep_modules

    if resolve_backend(spec) == "openvino":
        from hierrouter_graph.members.engine_choice import openvino_settings
        from hierrouter_graph.members.openvino_engine import backend_text

        return backend_text(openvino_settings(spec))
    folder = resolve_model_folder(spec.source, cache_dir)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device, spec.quantization)
    keep: tuple[str, ...] = ()
    if spec.quantization == "int8":
        keep = int8_keep_modules(_model_type(folder), spec.keep_full_precision)
    return _backend_text(device, dtype, spec.quantization, keep)


def _backend_text(device: str, dtype: Any, quantization: str, keep: tuple[str, ...]) -> str:
    text = f"transformers {device} {str(dtype).removeprefix('torch.')}"
    return text + (f" int8(kept: {','.join(keep) or 'none'})" if quantization == "int8" else "")


def load_causal_lm(spec: ModelSpec, cache_dir: Path) -> _LoadedLM:
    """Model and tokenizer for ``spec``, shared by every member with the same weights and device.

    Members that differ only in prompt, price or generation settings reuse one loaded model, so a
    pool of personas over one base costs one model's memory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hierrouter_graph.members.quantize import cuda_int8_load_kwargs, int8_keep_modules, quantize_int8_cpu

    folder = resolve_model_folder(spec.source, cache_dir)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device, spec.quantization)
    quant = f"{spec.quantization}:{spec.keep_full_precision}"
    key = (str(folder), device, str(dtype), spec.chat_template, quant)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        keep: tuple[str, ...] = ()
        load_kwargs: dict[str, Any] = {}
        if spec.quantization == "int8":
            keep = int8_keep_modules(_model_type(folder), spec.keep_full_precision)
            if device.startswith("cuda"):
                load_kwargs = cuda_int8_load_kwargs(keep)
            elif device.startswith("mps"):
                raise ValueError(f"{spec.name}: quantization 'int8' runs on CPU or CUDA, not {device}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **load_kwargs)
        except OSError as error:
            raise ModelSourceError(
                f"{spec.name}: could not load {spec.source!r} ({error}). If this is a hub id, "
                "this machine needs network access or a pre-filled HF cache; offline, use a local "
                f"folder, a .gguf file or a built-in name ({builtin_names()})"
            ) from error
        if not load_kwargs:  # bitsandbytes places the weights itself
            model.to(device)
        model.eval()
        if spec.quantization == "int8" and not device.startswith("cuda"):
            quantize_int8_cpu(model, keep)
        backend = _backend_text(device, dtype, spec.quantization, keep)
        if spec.chat_template is not None:
            tokenizer.chat_template = spec.chat_template
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = _LoadedLM(model=model, tokenizer=tokenizer, backend=backend)
        _LOADED[key] = loaded
        return loaded


def _stop_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """EOS plus the chat turn terminator, so a reply ends at its turn, not at max_new_tokens."""
    ids: set[int] = set()
    configured = generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _TURN_END_TOKENS if token in vocab)
    return sorted(ids)


def spec_base_rate(spec: ModelSpec, count_parameters: Callable[[], int]) -> float:
    """The spec's price, else 0.001/B params from the size in its name or source, else from
    ``count_parameters()`` (the loaded weights' count; only called when nothing names a size)."""
    if spec.base_rate is not None:
        return spec.base_rate
    named = param_count_from_name(spec.name) or param_count_from_name(spec.source)
    return base_rate_from_param_count(named or count_parameters())


def member_around(
    spec: ModelSpec,
    chat: BaseChatModel,
    tokenizer: Any,
    context_limit: int | None,
    base_rate: float,
    **generation: Any,
) -> PoolMember:
    """``spec``'s PoolMember around ``chat``: everything a hop reads to build, key and price a prompt.

    Why one function: the loaded member (``build_pool_member``) and the replay member
    (``replay.build_replay_member``) must build the same prompt for the same context, or a
    recorded hop would not be found. ``context_limit``: the model's ``max_position_embeddings``.
    ``generation``: the loaded member's ``batch_generate`` / ``cap_new_tokens``.
    """
    if spec.kind == "cloze_mc":  # scores options, reports its own usage, never cuts its prompt
        counter = TokenizerCounter(tokenizer) if getattr(tokenizer, "chat_template", None) else None
        return PoolMember(
            name=spec.name,
            chat_model=chat,
            base_rate=base_rate,
            counter=counter,
            system_prompt=spec.system_prompt,
            max_input_tokens=None,
            fingerprint=spec.fingerprint(),
        )
    return PoolMember(
        name=spec.name,
        chat_model=chat,
        base_rate=base_rate,
        counter=TokenizerCounter(tokenizer),
        system_prompt=spec.system_prompt,
        max_input_tokens=spec.max_input_tokens
        or (context_limit - spec.max_new_tokens if context_limit else None),
        fingerprint=spec.fingerprint(),
        max_new_tokens=spec.max_new_tokens,
        **generation,
    )


def _cloze_member(spec: ModelSpec, model: Any, tokenizer: Any) -> PoolMember:
    """The cloze specialist on the (shared) loaded base; it reports its own token usage."""
    from hierrouter_graph.members.cloze import ClozeMultipleChoiceChat

    chat = ClozeMultipleChoiceChat(
        model=model, tokenizer=tokenizer, model_id=spec.name, scoring=spec.cloze_scoring
    )
    return member_around(
        spec, chat, tokenizer, None, spec_base_rate(spec, lambda: base_parameter_count(model))
    )


def _pipeline_cap(tokens: int) -> dict[str, Any]:
    """A stage budget for the plain pipeline: ChatHuggingFace hands ``pipeline_kwargs`` on per call."""
    return {"pipeline_kwargs": {"max_new_tokens": tokens}}


def _request_cap(tokens: int) -> dict[str, Any]:
    """A stage budget for a micro-batched member: it travels with the request."""
    return {"max_new_tokens": tokens}


def _micro_batched(spec: ModelSpec, batch_generate: BatchGenerator | OpenVINOGenerator) -> BaseChatModel:
    """The member's chat model when micro-batching is on: requests queue for one shared generate."""
    from hierrouter_graph.microbatch import GenerationRequest, MicroBatchedChatModel, MicroBatcher

    def generate(requests: list[GenerationRequest]) -> list[tuple[str, Confidence | None]]:
        return batch_generate.generate_scored(
            [request.messages for request in requests],
            on_text=[request.on_text for request in requests],
            max_new_tokens=[request.max_new_tokens for request in requests],
        )

    batcher: MicroBatcher[GenerationRequest, tuple[str, Confidence | None]] = MicroBatcher(
        generate,
        max_batch_size=spec.max_batch_size,
        max_wait_ms=spec.batch_wait_ms,
        name=spec.name,
    )
    return MicroBatchedChatModel(batcher=batcher, model_id=spec.name)


def openvino_ir(spec: ModelSpec, cache_dir: Path) -> Path:
    """The OpenVINO IR of ``spec``'s model folder with its weight precision, converted once into
    ``cache_dir/openvino`` (what ``prepare`` does ahead of time; ``openvino_engine.py``)."""
    from hierrouter_graph.members.engine_choice import openvino_settings
    from hierrouter_graph.members.openvino_engine import convert_to_openvino, openvino_ir_folder

    folder = resolve_model_folder(spec.source, cache_dir)
    if not isinstance(folder, Path):
        raise ModelSourceError(
            f"{spec.name}: backend 'openvino' converts a local model folder; {spec.source!r} is a hub "
            "id (download it to a folder first, or use backend 'transformers')"
        )
    weights = openvino_settings(spec)["weights"]
    return convert_to_openvino(folder, openvino_ir_folder(folder, weights, cache_dir), weights)


def _folder_parameter_count(folder: Path | str) -> int:
    """Parameters in a model folder's safetensors files, read from their headers (no weights loaded)."""
    from math import prod

    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="np") as handle:
            total += sum(prod(handle.get_slice(name).get_shape()) for name in handle.keys())  # noqa: SIM118
    return total


def _openvino_member(spec: ModelSpec, cache_dir: Path) -> PoolMember:
    """A greedy chat member on OpenVINO GenAI, always micro-batched (its generate takes many prompts)."""
    from hierrouter_graph.members.engine_choice import openvino_settings
    from hierrouter_graph.members.openvino_engine import OpenVINOGenerator, load_openvino_model

    loaded = load_openvino_model(
        openvino_ir(spec, cache_dir), openvino_settings(spec), _stop_token_ids, spec.chat_template
    )
    if not getattr(loaded.tokenizer, "chat_template", None):
        raise ModelSourceError(
            f"{spec.name}: tokenizer of {spec.source!r} has no chat template; set ModelSpec.chat_template"
        )
    generator = OpenVINOGenerator(loaded, spec.max_new_tokens)
    rate = spec_base_rate(spec, lambda: _folder_parameter_count(resolve_model_folder(spec.source, cache_dir)))
    return member_around(
        spec,
        _micro_batched(spec, generator),
        loaded.tokenizer,
        loaded.context_limit,
        rate,
        batch_generate=generator,
        cap_new_tokens=_request_cap,
    )


def build_pool_member(spec: ModelSpec, cache_dir: Path) -> PoolMember:
    """The default factory: ChatHuggingFace over a local text-generation pipeline.

    The tokenizer is passed explicitly so ChatHuggingFace never asks the hub for one, and
    ``return_full_text=False`` keeps the prompt out of the reply. A spec with an ``endpoint``
    is served remotely instead (``remote.build_endpoint_member``): nothing is loaded here. A
    ``kind: program`` member is any of these, running the programs it writes (``members/program.py``).
    """
    from hierrouter_graph.members.program import for_spec

    return for_spec(_chat_member(spec, cache_dir), spec)


def _chat_member(spec: ModelSpec, cache_dir: Path) -> PoolMember:
    """``build_pool_member`` before a program member's wrapper."""
    if spec.endpoint is not None:
        from hierrouter_graph.members.remote import build_endpoint_member

        return build_endpoint_member(spec)
    if resolve_backend(spec) == "openvino":
        return _openvino_member(spec, cache_dir)
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
    from transformers import pipeline

    loaded = load_causal_lm(spec, cache_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    if spec.adapter is not None:  # the shared base with this member's LoRA selected per call (adapters.py)
        model = adapter_view(spec, model)
    if spec.kind == "cloze_mc":
        return _cloze_member(spec, model, tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelSourceError(
            f"{spec.name}: tokenizer of {spec.source!r} has no chat template; set "
            "ModelSpec.chat_template to a Jinja template for this base model"
        )
    generate_kwargs: dict[str, Any] = {
        "max_new_tokens": spec.max_new_tokens,
        "do_sample": False,
        "eos_token_id": _stop_token_ids(model.generation_config, tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        **spec.generation_kwargs,
    }
    if not generate_kwargs.get("do_sample"):
        for sampling_only in ("temperature", "top_p", "top_k"):
            generate_kwargs.setdefault(sampling_only, None)
    pipe = pipeline(
        "text-generation", model=model, tokenizer=tokenizer, return_full_text=False, **generate_kwargs
    )
    batch_generate = BatchGenerator(model, tokenizer, generate_kwargs, max_batch=max(16, spec.max_batch_size))
    chat: BaseChatModel = ChatHuggingFace(
        llm=HuggingFacePipeline(pipeline=pipe, model_id=spec.name), tokenizer=tokenizer, model_id=spec.name
    )
    cap = _pipeline_cap
    if spec.max_batch_size > 1:  # concurrent hops share one generate (see microbatch.py)
        chat, cap = _micro_batched(spec, batch_generate), _request_cap

    limit = getattr(model.config, "max_position_embeddings", None)
    rate = spec_base_rate(spec, lambda: base_parameter_count(model))
    return member_around(
        spec, chat, tokenizer, limit, rate, batch_generate=batch_generate, cap_new_tokens=cap
    )
