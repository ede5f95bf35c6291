"""The fast CPU engine: a model folder converted once to an OpenVINO IR, run by openvino-genai.

Why: on the CPUs here OpenVINO GenAI generates 1.6-2.6x faster than the torch int8 path and
keeps float32's quality (torch's dynamic int8 loses GSM8K items; docs/offline-pool.md).

Conversion (``convert_to_openvino``, done by ``python -m hierrouter_graph prepare``): the
transformers model (float32, SDPA attention) is traced by ``openvino.convert_model`` through a
wrapper whose inputs are the ids, mask, positions and the flat past keys/values; the KV cache is
then folded into the model as state (``beam_idx`` reorder + make-stateful, the layout
openvino-genai's pipelines expect), int8 weights come from ``nncf.compress_weights`` (per-channel,
asymmetric) under ``quantization: int8``, and the tokenizer is converted with openvino-tokenizers.
optimum-intel would do the same but pins transformers < 5.6 and pulls a torchvision that breaks
torch 2.13. The IR is written to a temp folder and renamed into place under a file lock, so a kill
leaves nothing a later run trusts.

Generation (``OpenVINOGenerator``): prompts are rendered with the member's HF tokenizer and chat
template and tokenized exactly as the transformers path does, so token counts are the same;
``ContinuousBatchingPipeline`` generates many prompts at once, each with its own budget, greedily,
stopping at the same stop ids. Confidence: openvino-genai reports one cumulative log-probability
per reply, so ``mean_logprob`` = score / reply tokens (stop token included, as on the torch path);
the per-step entropy is not exposed, so ``mean_entropy`` is None (``confidence.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierrouter_graph.confidence import Confidence
from hierrouter_graph.members.generation import shared_generate_lock
from hierrouter_graph.members.pool import TokenizerCounter

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = [
    "OpenVINOGenerator",
    "OpenVINOModel",
    "backend_text",
    "convert_to_openvino",
    "cpu_properties",
    "load_openvino_model",
    "openvino_ir_folder",
    "openvino_threads",
]

_MARKER = "hierrouter-openvino.json"
_DTYPE_HINT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
_KV_CACHE = {"float32": "f32", "u8": "u8"}


def openvino_ir_folder(model_folder: Path, weights: str, cache_dir: Path) -> Path:
    """Where the IR of ``model_folder`` with ``weights`` ('int8'/'float32') lives in the cache:
    ``cache_dir/openvino/<folder name>-<weights>``, beside the converted safetensors folders."""
    return cache_dir / "openvino" / f"{model_folder.name}-{weights}"


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def convert_to_openvino(model_folder: Path, target: Path, weights: str) -> Path:
    """Convert a transformers causal-LM folder to an openvino-genai IR folder at ``target``, once.

    Args:
        model_folder: a transformers model folder (config.json, weights, tokenizer, chat template).
        target: the IR folder to create; returned as is when a complete one is already there.
        weights: 'int8' (NNCF int8 weight compression) or 'float32' (the weights unchanged).
    """
    if weights not in ("int8", "float32"):
        raise ValueError(f"weights: expected 'int8' or 'float32', got {weights!r}")
    if _is_complete(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if _is_complete(target):
            return target
        if target.exists():
            shutil.rmtree(target)  # no marker: a torn folder, never trusted
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            started = time.perf_counter()
            _write_ir(model_folder, staging, weights)
            seconds = round(time.perf_counter() - started, 1)
            marker = {"source": str(model_folder), "weights": weights, "seconds": seconds}
            (staging / _MARKER).write_text(json.dumps(marker) + "\n")
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_ir(model_folder: Path, out: Path, weights: str) -> None:
    """Trace, make stateful, compress and save the model and its tokenizer into ``out``."""
    import openvino as ov
    import torch
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
    model = AutoModelForCausalLM.from_pretrained(
        str(model_folder), dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    config = model.config
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    past_names = [f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value")]
    present_names = [f"present.{i}.{part}" for i in range(layers) for part in ("key", "value")]
    example = (
        torch.ones(2, 4, dtype=torch.long),
        torch.ones(2, 7, dtype=torch.long),
        torch.arange(3, 7).expand(2, 4).contiguous(),
        *[torch.zeros(2, kv_heads, 3, head_dim) for _ in past_names],
    )
    shapes = [(ov.PartialShape([-1, -1]), ov.Type.i64)] * 3 + [
        (ov.PartialShape([-1, kv_heads, -1, head_dim]), ov.Type.f32)
    ] * len(past_names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the branches traced are the general ones
        ov_model = ov.convert_model(_cache_as_tensors(model), example_input=example, input=shapes)
    in_names = ["input_ids", "attention_mask", "position_ids", *past_names]
    for port, name in zip(ov_model.inputs, in_names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *present_names], strict=True):
        port.get_tensor().set_names({name})
    _make_stateful(ov_model, past_names, present_names)
    if weights == "int8":
        import nncf

        ov_model = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(ov_model, str(out / "openvino_model.xml"), compress_to_fp16=False)
    ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, str(out / "openvino_tokenizer.xml"))
    ov.save_model(ov_detokenizer, str(out / "openvino_detokenizer.xml"))
    tokenizer.save_pretrained(str(out))
    config.save_pretrained(str(out))
    model.generation_config.save_pretrained(str(out))


def _cache_as_tensors(model: Any) -> Any:
    """A ``torch.nn.Module`` view of a causal LM whose KV cache goes in and out as flat tensors
    (``convert_model`` traces tensors, not transformers' ``Cache`` objects)."""
    import torch
    from transformers import DynamicCache

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> Any:
            cache = DynamicCache(config=self.model.config)
            layers: list[Any] = list(cache.layers)
            for index, layer in enumerate(layers):
                key, value = past[2 * index], past[2 * index + 1]
                layer.lazy_initialization(key, value)
                layer.keys, layer.values = key, value  # no empty-tensor concat in the trace
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            flat = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *flat)

    return Wrapper()


def _make_stateful(ov_model: Any, past_names: list[str], present_names: list[str]) -> None:
    """Fold the KV cache into the model as variables, reordered by a ``beam_idx`` input and
    initialised to zeros of the batch's size: the stateful layout openvino-genai runs."""
    import numpy as np
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([-1]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam_idx])
    for name in past_names:
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        reordered = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(reordered.output(0))
    ov_model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(ov_model, dict(zip(past_names, present_names, strict=True)))
    ids = ov_model.input("input_ids")
    shape = opset13.shape_of(ids, output_type="i64")
    batch = opset13.gather(shape, opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims = [dim.min_length for dim in op.get_output_partial_shape(0)]
        parts = [batch] + [opset13.constant(np.array([dim], dtype=np.int64)) for dim in dims[1:]]
        zeros = opset13.constant(0.0, dtype=op.get_output_element_type(0))
        op.set_arguments([opset13.broadcast(zeros, opset13.concat(parts, axis=0))])
    ov_model.validate_nodes_and_infer_types()


def openvino_threads() -> int:
    """Inference threads per OpenVINO pipeline: ``$HIERROUTER_OPENVINO_THREADS``, else
    ``$OMP_NUM_THREADS``, else 0 (OpenVINO's default: every core). Set 1 when several jobs share
    the machine: two-thread runs collapse when another job holds a core (OpenMP-style spin-wait)."""
    for variable in ("HIERROUTER_OPENVINO_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                raise ValueError(f"${variable}: expected a whole number of threads, got {value!r}") from None
            if threads < 0:
                raise ValueError(f"${variable}: expected >= 0 threads, got {threads}")
            return threads
    return 0


def openvino_cache_gb() -> int:
    """Whole GB of KV cache per OpenVINO pipeline: ``$HIERROUTER_OPENVINO_CACHE_GB``, else 1.

    Why a knob: continuous batching only keeps a batch full while every running row's cache fits;
    1 GB holds ~18k float32 tokens of the 1.5B (16 rows of ~1000), enough for a chat server but
    not for a recorder that hands 48 prompts to one call. The size changes no reply."""
    value = os.environ.get("HIERROUTER_OPENVINO_CACHE_GB", "").strip()
    if not value:
        return 1
    try:
        size = int(value)
    except ValueError:
        expected = f"$HIERROUTER_OPENVINO_CACHE_GB: expected a whole number of GB, got {value!r}"
        raise ValueError(expected) from None
    if size < 1:
        raise ValueError(f"$HIERROUTER_OPENVINO_CACHE_GB: expected >= 1 GB, got {size}")
    return size


@dataclass
class OpenVINOModel:
    """A loaded IR: the continuous-batching pipeline, the HF tokenizer and the stop ids."""

    pipeline: Any
    tokenizer: Any
    stop_ids: list[int]
    context_limit: int | None
    backend: str
    """For record metadata, e.g. 'openvino cpu weights=int8 dtype=bfloat16 kv=u8 threads=1'."""


def backend_text(settings: dict[str, str]) -> str:
    """How an OpenVINO member runs, for record metadata (``local.describe_backend``)."""
    threads = openvino_threads()
    return (
        f"openvino cpu weights={settings['weights']} dtype={settings['inference_dtype']} "
        f"kv={settings['kv_cache']} threads={threads or 'all'}"
    )


def cpu_properties(settings: dict[str, str], threads: int) -> dict[str, Any]:
    """The CPU plugin's properties for ``settings`` and ``threads`` (0: OpenVINO's default).

    With an explicit thread count (the machine is shared with other jobs) the threads are NOT
    pinned to cores: OpenVINO binds a 1-thread pipeline's inferring thread to core 0 before every
    inference (strace: ``sched_setaffinity(0, [0])`` each step), in every process, so two
    single-threaded recorders shared one core while the other idled (50% + 50%; 2x the pace once
    unbound). Pinning decides where threads run, never the numbers: replies and fingerprints stay.
    """
    properties: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _DTYPE_HINT[settings["inference_dtype"]],
        "KV_CACHE_PRECISION": _KV_CACHE[settings["kv_cache"]],
    }
    if settings["kv_cache"] == "float32":
        properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0  # exact float32 activations
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
        properties["ENABLE_CPU_PINNING"] = False
    return properties


_LOADED: dict[tuple[str, str, str, int, str | None], OpenVINOModel] = {}
_LOAD_LOCK = threading.Lock()


def load_openvino_model(
    ir_folder: Path,
    settings: dict[str, str],
    stop_ids: Callable[[Any, Any], list[int]],
    chat_template: str | None = None,
) -> OpenVINOModel:
    """The IR at ``ir_folder`` compiled for the CPU with ``settings`` (``engine_choice.openvino_settings``),
    shared by every member with the same IR and numerics. ``stop_ids(generation_config, tokenizer)``
    gives the member's stop token ids (the same rule as the transformers path); ``chat_template``
    replaces the tokenizer's own (``ModelSpec.chat_template``)."""
    threads = openvino_threads()
    key = (str(ir_folder), settings["inference_dtype"], settings["kv_cache"], threads, chat_template)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        import openvino_genai as og
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        scheduler = og.SchedulerConfig()
        scheduler.cache_size = openvino_cache_gb()
        pipeline = og.ContinuousBatchingPipeline(
            str(ir_folder), scheduler, "CPU", cpu_properties(settings, threads)
        )
        tokenizer = AutoTokenizer.from_pretrained(str(ir_folder))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        generation_config = GenerationConfig.from_pretrained(str(ir_folder))
        limit = getattr(AutoConfig.from_pretrained(str(ir_folder)), "max_position_embeddings", None)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        stops = stop_ids(generation_config, tokenizer)
        loaded = OpenVINOModel(pipeline, tokenizer, stops, limit, backend_text(settings))
        _LOADED[key] = loaded
        return loaded


class OpenVINOGenerator:
    """Greedy batched generation on an OpenVINO model, with ``generation.BatchGenerator``'s contract.

    Same rendered prompt and token ids as the transformers path, one request per prompt in one
    continuous-batching call (no padding: batched replies equal one-by-one replies), each with its
    own budget. Sampling settings are refused: the engine is used for greedy members only.
    """

    def __init__(self, model: OpenVINOModel, max_new_tokens: int) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_new_tokens = max_new_tokens
        self.counter = TokenizerCounter(model.tokenizer)
        self._lock = shared_generate_lock("cpu")

    def __call__(self, prompts: list[list[BaseMessage]]) -> list[str]:
        return [text for text, _ in self.generate_scored(prompts)]

    def generate_ids(
        self, ids: Sequence[Sequence[int]], budgets: Sequence[int]
    ) -> list[tuple[list[int], float]]:
        """New token ids (stop token included) and cumulative log-probability per prompt."""
        import numpy as np
        import openvino as ov
        import openvino_genai as og

        configs = []
        for budget in budgets:
            config = og.GenerationConfig()
            config.max_new_tokens = int(budget)
            config.do_sample = False
            config.stop_token_ids = set(self.model.stop_ids)
            config.logprobs = 1  # makes the pipeline report each reply's cumulative log-probability
            configs.append(config)
        tensors = [ov.Tensor(np.asarray([list(row)], dtype=np.int64)) for row in ids]
        with self._lock:
            results = self.model.pipeline.generate(tensors, configs)
        return [(list(result.m_generation_ids[0]), float(result.m_scores[0])) for result in results]

    def generate_scored(
        self,
        prompts: list[list[BaseMessage]],
        on_text: Sequence[Callable[[str], None] | None] | None = None,
        max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[tuple[str, Confidence | None]]:
        """Replies and their confidence (mean log-prob; entropy None). ``on_text`` callbacks get
        each whole reply once it is done (the pieces still concatenate to the reply)."""
        rendered = [self.counter.render_prompt(messages) for messages in prompts]
        ids = [list(self.tokenizer(text)["input_ids"]) for text in rendered]
        budgets = [
            budget or self.max_new_tokens
            for budget in (max_new_tokens if max_new_tokens is not None else [None] * len(ids))
        ]
        out: list[tuple[str, Confidence | None]] = []
        for index, (tokens, score) in enumerate(self.generate_ids(ids, budgets)):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            confidence = Confidence(min(score / len(tokens), 0.0), None) if tokens else None
            sink = on_text[index] if on_text is not None else None
            if sink is not None and text:
                sink(text)
            out.append((text, confidence))
        return out
