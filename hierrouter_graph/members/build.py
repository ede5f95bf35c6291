"""``build_pool``: a config's pool members, in action order — given chat models, or built from
their ``ModelSpec``s (local weights, endpoints, or replay-only tokenizers).

Why a module of its own: the graph, the server, training and the benchmarks all need a pool, and
only the graph needs LangGraph; building members is the pool's job, not the graph's.
"""

from __future__ import annotations

from collections.abc import Mapping

from langchain_core.language_models import BaseChatModel

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.cost import base_rate_from_param_count, param_count_from_name
from hierrouter_graph.members.local import build_pool_member
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.members.program import for_spec
from hierrouter_graph.members.replay import build_replay_member
from hierrouter_graph.model_spec import ModelSpec

__all__ = ["build_pool"]


def build_pool(
    config: RouterConfig,
    chat_models: Mapping[str, BaseChatModel | PoolMember] | None = None,
    *,
    weights: bool = True,
) -> dict[str, PoolMember]:
    """Pool members in action order: the given chat models, the rest built from their specs.

    ``weights=False`` builds the rest for replay only (``replay.build_replay_member``:
    tokenizer and config, no weights), for commands that never generate.
    """
    given = dict(chat_models or {})
    unknown = sorted(set(given) - set(config.model_names))
    if unknown:
        raise KeyError(
            f"chat_models names unknown models {unknown}; the config's pool is {config.model_names}"
        )
    pool: dict[str, PoolMember] = {}
    for spec in config.models:
        supplied = given.get(spec.name)
        if isinstance(supplied, PoolMember):  # a program spec runs what the given member writes
            pool[spec.name] = for_spec(supplied, spec)
        elif supplied is not None:
            pool[spec.name] = for_spec(
                PoolMember(
                    name=spec.name,
                    chat_model=supplied,
                    base_rate=_supplied_base_rate(spec),
                    system_prompt=spec.system_prompt,
                    max_input_tokens=spec.max_input_tokens,
                    fingerprint=spec.fingerprint(),
                ),
                spec,
            )
        elif weights:
            pool[spec.name] = build_pool_member(spec, config.resolved_cache_dir)
        else:
            pool[spec.name] = build_replay_member(spec, config.resolved_cache_dir)
    return pool


def _supplied_base_rate(spec: ModelSpec) -> float:
    """Price of a user-supplied chat model: its spec's base_rate, else the size in its name."""
    if spec.base_rate is not None:
        return spec.base_rate
    params = param_count_from_name(spec.name) or param_count_from_name(spec.source)
    if params is None:
        raise ValueError(
            f"models[{spec.name}].base_rate: a chat model passed in chat_models has no weights to "
            "count; set base_rate, or name a size in its name/source (e.g. '3B')"
        )
    return base_rate_from_param_count(params)
