"""One pool member's configuration: ``ModelSpec`` (and ``EndpointSpec`` for a served member).

Pydantic so a bad YAML/JSON file fails at load time with the offending field named, long before a
model is loaded; ``ModelSpec.fingerprint`` names everything that changes what the member replies —
the key its recorded replies are replayed by — so it must stay byte-for-byte stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ENDPOINT_UNSUPPORTED_FIELDS",
    "PROGRAM_FIELDS",
    "RESERVED_NODE_NAMES",
    "EndpointSpec",
    "ModelSpec",
]

RESERVED_NODE_NAMES = frozenset({"ingest", "router", "finalize", "__start__", "__end__"})

Device = str
DType = Literal["auto", "float32", "bfloat16", "float16"]


def _adapter_identity(adapter: str) -> str:
    """An adapter's identity for fingerprints: the hash of its weights when the folder exists.

    Why: a retrained adapter saved to the same folder must not replay the old adapter's replies.
    """
    import hashlib

    weights = Path(adapter).expanduser() / "adapter_model.safetensors"
    if not weights.is_file():
        return adapter
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return f"{Path(adapter).name}@{digest}"


ENDPOINT_UNSUPPORTED_FIELDS: dict[str, str] = {
    "adapter": "LoRA adapters are applied to local weights; serve the adapted model instead",
    "chat_template": "the inference server applies its own chat template",
    "max_input_tokens": "there is no local tokenizer to cut the context with; the server enforces its limit",
}
"""ModelSpec fields that only mean something for local weights, with why, for endpoint members."""

PROGRAM_FIELDS: tuple[str, ...] = (
    "program_timeout_s",
    "program_memory_mb",
    "program_output_chars",
    "execution_cost",
    "program_workers",
)
"""ModelSpec fields that only mean something for ``kind: program`` members."""

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TOKEN_PREFIXES = ("hf_", "sk_", "gsk_", "ghp_")


class EndpointSpec(BaseModel):
    """Where a remote pool member is served and what to do when that server misbehaves.

    Kept as a nested block so a local member's config (and fingerprint) is untouched, and so the
    failure policy sits next to the URL it is about.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Base URL of an OpenAI-compatible server (transformers serve, vLLM, TGI), e.g. "
        "'http://127.0.0.1:8000'; '/v1/chat/completions' is appended unless already there.",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        description="Served model name sent as the request's 'model' field; None omits it (the "
        "server's only model: transformers serve with a pinned folder, TGI).",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=_ENV_VAR_NAME,
        description="NAME of the environment variable holding the API key (sent as a Bearer "
        "token). Never the key itself: configs are shared and checked in.",
    )
    timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest wait for one complete reply, per attempt."
    )
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Extra attempts after a timeout, connection error, 5xx/429."
    )
    backoff_s: float = Field(
        default=0.5, ge=0, le=60, description="Sleep before retry k is backoff_s * 2**(k-1) (capped at 30 s)."
    )
    max_concurrency: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Most requests in flight to this server at once, from one process (recording "
        "sends a stage's hops concurrently up to it; graph.batch and the OpenAI-compatible server "
        "share it). Set it to the server's parallel slots (vLLM max_num_seqs, TGI "
        "max_concurrent_requests). Not part of the fingerprint: it changes speed, not replies.",
    )
    on_error: Literal["fail", "fallback"] = Field(
        default="fail",
        description="'fail': the query fails with an error naming the model and URL. 'fallback': "
        "the hop is answered (and priced) by `fallback_model`; the trace records it.",
    )
    fallback_model: str | None = Field(
        default=None, description="Pool member that answers when on_error is 'fallback'."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"expected an http(s) URL such as 'http://127.0.0.1:8000', got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"expected a base URL without '?query' or '#fragment', got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, value: str | None) -> str | None:
        if value is not None and value.lower().startswith(_TOKEN_PREFIXES) and len(value) > 20:
            raise ValueError(
                "this looks like an API key; give the NAME of the environment variable that holds "
                "it (e.g. 'MY_SERVER_KEY'), never the key itself"
            )
        return value

    @model_validator(mode="after")
    def _policy_complete(self) -> EndpointSpec:
        if self.on_error == "fallback" and self.fallback_model is None:
            raise ValueError("fallback_model: required when on_error is 'fallback'")
        if self.on_error == "fail" and self.fallback_model is not None:
            raise ValueError("fallback_model: only used with on_error: 'fallback' (on_error is 'fail')")
        return self


class ModelSpec(BaseModel):
    """One pool member: where its weights come from, what it costs, how it generates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="Node name in the graph and action label of the router; letters, digits, "
        "'-', '_' and '.', starting with a letter or digit.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
    )
    kind: Literal["generate", "cloze_mc", "program"] = Field(
        default="generate",
        description="'generate': a chat model over a text-generation pipeline. 'cloze_mc': a "
        "multiple-choice specialist that scores lettered options by log-likelihood (no generation). "
        "'program': the chat model writes a Python program, the sandbox runs it, and the reply is "
        "the program plus its real output (members/program.py; docs/configuration.md).",
    )
    cloze_scoring: Literal["option_text", "letter"] = Field(
        default="option_text",
        description="cloze_mc only. 'option_text': each option's text scored as the continuation of "
        "'Question: q\\nAnswer:' (no chat template; right for small base-like models). 'letter': the "
        "member's chat prompt (template, system prompt, stage instruction, context) then 'Answer:', "
        "and the next-token log-probability of each option letter: one forward pass, no output tokens "
        "(right for instruction-tuned models that know the answer but ramble when generating).",
    )
    source: str = Field(
        min_length=1,
        description="A built-in offline name ('offline:smollm2-135m-instruct', "
        "'offline:gemma-3-270m'), a local model folder, a .gguf file, or a hub id 'org/name'.",
    )
    base_rate: float | None = Field(
        default=None,
        ge=0,
        description="Cost per token. None: 0.001 per billion parameters (the paper's heuristic).",
    )
    max_new_tokens: int = Field(default=128, ge=1, le=32768)
    generation_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for generate(), e.g. {'do_sample': False}.",
    )
    system_prompt: str | None = None
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template for base models whose tokenizer has none.",
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Longest prompt the model is given; a longer context is cut in the middle "
        "(the query and the newest text are kept). None: the model's own limit.",
    )
    adapter: str | None = Field(
        default=None,
        min_length=1,
        description="A PEFT LoRA adapter folder applied on top of `source`. Members that share a "
        "`source` share ONE loaded base model, each adapter selected per call.",
    )
    endpoint: EndpointSpec | None = Field(
        default=None,
        description="Serve this member from an inference server instead of local weights; then "
        "`source` is only a label of the served model (size heuristic, fingerprint).",
    )
    device: Device = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    dtype: DType = Field(
        default="auto",
        description="'auto': bfloat16 on CUDA (float16 where bf16 is unsupported), float16 on MPS; on "
        "CPU bfloat16 only where the CPU has native bf16 (avx512_bf16/AMX), else float32.",
    )
    quantization: Literal["none", "int8"] = Field(
        default="none",
        description="'int8': int8 weights on every Linear except `keep_full_precision` (CPU: torch "
        "dynamic int8, ~2x float32 batched on avx2; CUDA: bitsandbytes LLM.int8). 'none': the dtype's "
        "full weights. Part of the fingerprint: int8 replies differ from float32 ones.",
    )
    keep_full_precision: tuple[str, ...] | None = Field(
        default=None,
        description="Module-name suffixes left unquantized under int8 (e.g. ['down_proj']). None: "
        "the architecture's default (down_proj for Qwen2/Llama/Gemma-3/Phi-3, whose outlier "
        "activations enter it; see hierrouter_graph/members/quantize.py).",
    )
    backend: Literal["auto", "transformers", "openvino"] = Field(
        default="auto",
        description="The engine of a local 'generate' member. 'transformers': torch, any device. "
        "'openvino': an OpenVINO IR (converted once by `prepare`, int8 weights under quantization "
        "'int8') run by openvino-genai on the CPU. 'auto': OpenVINO for the built-in Qwen members "
        "on a CPU with the openvino extra installed, transformers elsewhere (see engine_choice.py). "
        "An OpenVINO member's engine, weights and resolved dtype are part of its fingerprint.",
    )
    description: str = Field(default="", description="One-line model card, shown in traces/docs.")
    max_batch_size: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Micro-batching of a local 'generate' model: concurrent hops (graph.batch, a "
        "server) share one left-padded generate of up to this many prompts. 1 disables it (plain "
        "pipeline, one prompt per call). Not in the fingerprint: float32 replies are identical.",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="Longest a hop waits for others to join its micro-batch (from its arrival).",
    )

    program_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="kind 'program': wall-clock limit of one program run."
    )
    program_memory_mb: int = Field(
        default=1024, ge=64, le=65536, description="kind 'program': address-space limit of a run (MiB)."
    )
    program_output_chars: int = Field(
        default=1000,
        ge=100,
        le=100_000,
        description="kind 'program': the reply keeps the last this many characters of stdout/stderr.",
    )
    execution_cost: float = Field(
        default=0.0, ge=0, description="kind 'program': price added to the hop's δ per program run."
    )
    program_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="kind 'program': programs run at once (batched hops); not in the fingerprint.",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NODE_NAMES:
            raise ValueError(
                f"'{value}' is reserved for the graph's own nodes "
                f"({', '.join(sorted(RESERVED_NODE_NAMES))}); choose another model name"
            )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        head = value.split(":", 1)[0]
        if head not in {"auto", "cpu", "cuda", "mps"}:
            raise ValueError(f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")
        return value

    @model_validator(mode="after")
    def _cloze_scoring_applies(self) -> ModelSpec:
        if self.cloze_scoring != "option_text" and self.kind != "cloze_mc":
            raise ValueError(
                f"cloze_scoring: only a kind 'cloze_mc' member scores options (kind is {self.kind!r})"
            )
        return self

    @model_validator(mode="after")
    def _program_fields_need_program(self) -> ModelSpec:
        """Program settings on another kind would silently do nothing: refuse them."""
        if self.kind != "program":
            for field_name in PROGRAM_FIELDS:
                if getattr(self, field_name) != type(self).model_fields[field_name].default:
                    raise ValueError(f"{field_name}: only used with kind 'program' (kind is {self.kind!r})")
        return self

    @model_validator(mode="after")
    def _backend_consistent(self) -> ModelSpec:
        """An explicit OpenVINO member must be one the OpenVINO engine can serve."""
        if self.backend != "openvino":
            return self
        refused = {
            "endpoint": self.endpoint is not None and "an endpoint member is served remotely",
            "kind": self.kind == "cloze_mc" and "cloze_mc scores options with the torch model",
            "adapter": self.adapter is not None and "LoRA adapters are applied to the torch model",
            "keep_full_precision": self.keep_full_precision is not None
            and "OpenVINO int8 compresses every weight (NNCF, per channel)",
            "generation_kwargs": bool(self.generation_kwargs)
            and "the OpenVINO engine decodes greedily with the member's budget and stop ids only",
        }
        for field_name, why in refused.items():
            if why:
                raise ValueError(f"{field_name}: not supported with backend 'openvino' ({why})")
        return self

    @model_validator(mode="after")
    def _endpoint_consistent(self) -> ModelSpec:
        """An endpoint member has no local weights: refuse settings that would silently do nothing."""
        if self.endpoint is None:
            return self
        if self.kind == "cloze_mc":
            raise ValueError(
                "kind: an endpoint member must be 'generate' or 'program' (cloze_mc needs local weights)"
            )
        for field_name, why in ENDPOINT_UNSUPPORTED_FIELDS.items():
            if getattr(self, field_name) is not None:
                raise ValueError(f"{field_name}: not supported with `endpoint` ({why})")
        if self.device != "auto" or self.dtype != "auto":
            raise ValueError("device/dtype: the inference server chooses them; leave 'auto' with `endpoint`")
        if self.quantization != "none" or self.keep_full_precision is not None:
            raise ValueError("quantization: the inference server quantizes; leave 'none' with `endpoint`")
        if self.endpoint.fallback_model == self.name:
            raise ValueError("endpoint.fallback_model: a member cannot fall back to itself")
        if self.base_rate is None:
            from hierrouter_graph.cost import param_count_from_name

            if param_count_from_name(self.name) is None and param_count_from_name(self.source) is None:
                raise ValueError(
                    "base_rate: an endpoint member has no local weights to count; set base_rate or "
                    "name a size in its name/source (e.g. 'SmolLM2-135M')"
                )
        return self

    def fingerprint(self) -> str:
        """Stable identity of what this member generates: the fields that change its replies.

        Replay stores key recorded generations on it, so a changed prompt or generation setting
        never reuses stale replies, while cost-only changes (base_rate) do.
        """
        relevant = self.model_dump(
            include={
                "kind",
                "source",
                "max_new_tokens",
                "generation_kwargs",
                "system_prompt",
                "chat_template",
                "max_input_tokens",
                "dtype",
            }
        )
        if self.cloze_scoring != "option_text":  # only when set: existing cloze fingerprints stay
            relevant["cloze_scoring"] = self.cloze_scoring
        if self.quantization != "none":  # only when set: fingerprints of full-precision members stay
            relevant["quantization"] = self.quantization
            relevant["keep_full_precision"] = self.keep_full_precision
        if self.adapter is not None:  # only when set: fingerprints of plain members stay unchanged
            relevant["adapter"] = _adapter_identity(self.adapter)
        if self.endpoint is not None:  # likewise: served name, not the URL (moving a server keeps replays)
            relevant["endpoint"] = {"model": self.endpoint.model}
        if self.kind == "program":  # what changes a program's run (and so the reply); price and workers don't
            relevant["program"] = {
                "timeout_s": self.program_timeout_s,
                "memory_mb": self.program_memory_mb,
                "output_chars": self.program_output_chars,
            }
        from hierrouter_graph.members.engine_choice import engine_identity

        engine = engine_identity(self)
        if engine is not None:  # only on OpenVINO: transformers members' fingerprints stay unchanged
            relevant["engine"] = engine
        return json.dumps(relevant, sort_keys=True, default=str)
