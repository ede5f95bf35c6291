"""Pool members for replay: the prompt, the price and the fingerprint of a member, without its weights.

Why: training and evaluating on a recorded outcome tree never generates — every hop is looked up
by (fingerprint, prompt) — yet building the real pool loads and quantizes every model (on the
offline default pool ~1.5 minutes and several GB on 2 CPU cores; for a pool of 7B models, far
more). A replay member loads only the tokenizer and the model config, which is all the hop needs
to build the exact prompt (including the middle cut of an over-long context) and to price it.
Its chat model refuses to generate, naming the way out (``--live``).

``build_replay_member(spec, cache_dir)`` agrees with ``local.build_pool_member`` on everything a
replayed hop reads: both build the member with ``local.member_around`` and price it with
``local.spec_base_rate`` (a test checks them field by field on a tiny model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from hierrouter_graph.members.adapters import base_parameter_count
from hierrouter_graph.members.local import load_causal_lm, member_around, spec_base_rate
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.members.sources import resolve_model_folder
from hierrouter_graph.model_spec import ModelSpec

__all__ = ["NotLoadedChat", "ReplayOnlyMemberError", "build_replay_member"]


class ReplayOnlyMemberError(RuntimeError):
    """A replay member was asked to generate: the hop is not recorded."""


class NotLoadedChat(BaseChatModel):
    """The chat model of a replay member: it has no weights, so generating is an error."""

    member: str

    @property
    def _llm_type(self) -> str:
        return "not-loaded"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise ReplayOnlyMemberError(
            f"{self.member}: this pool was built for replay (no weights loaded) and the hop is not "
            "in the replay store; record it with training/record.py, or pass --live"
        )


def _replay_cap(tokens: int) -> dict[str, Any]:
    """Stage budgets apply to local members, so a replay member says it can be capped (the budget
    enters the replay key); the cap itself is only used to generate, which it never does."""
    return {"max_new_tokens": tokens}


def _loaded_parameter_count(spec: ModelSpec, cache_dir: Path) -> int:
    """Only for a spec whose price nothing names: the one case that loads the weights."""
    return base_parameter_count(load_causal_lm(spec, cache_dir).model)


def build_replay_member(spec: ModelSpec, cache_dir: Path) -> PoolMember:
    """A member that replays ``spec``'s recorded hops exactly, from its tokenizer and config only.

    Endpoint members load nothing anyway and are built as usual. A program member replays its
    composed replies (program and output) and runs nothing: a miss raises before any program.
    """
    from hierrouter_graph.members.program import for_spec

    if spec.endpoint is not None:
        from hierrouter_graph.members.remote import build_endpoint_member

        return for_spec(build_endpoint_member(spec), spec)
    from transformers import AutoConfig, AutoTokenizer

    folder = str(resolve_model_folder(spec.source, cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template
    limit = getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", None)
    rate = spec_base_rate(spec, lambda: _loaded_parameter_count(spec, cache_dir))
    member = member_around(
        spec, NotLoadedChat(member=spec.name), tokenizer, limit, rate, cap_new_tokens=_replay_cap
    )
    return for_spec(member, spec)
