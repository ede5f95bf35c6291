"""hierrouter-graph: HierRouter (arXiv 2511.09873) as a LangGraph graph.

A PPO-trained router answers each query in L hops over a pool of small chat models, choosing the
next model from the context so far, the stage and the cost spent.
"""

from typing import TYPE_CHECKING

from hierrouter_graph.config import PAPER_STAGE_PROMPTS, RouterConfig
from hierrouter_graph.cost import hop_cost
from hierrouter_graph.defaults import default_config, default_policy
from hierrouter_graph.graph import HierRouterGraph, InvalidQueryError, create_hierrouter_graph
from hierrouter_graph.hop import HopResult, run_hop
from hierrouter_graph.members.adapters import AdapterError
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.members.local import build_pool_member
from hierrouter_graph.members.pool import PoolMember, TokenizerCounter
from hierrouter_graph.members.remote import RemoteModelError, build_endpoint_member
from hierrouter_graph.members.sources import ModelSourceError
from hierrouter_graph.microbatch import MicroBatchedChatModel, MicroBatcher
from hierrouter_graph.model_spec import EndpointSpec, ModelSpec
from hierrouter_graph.policy.dynamic import DescriptorPolicy
from hierrouter_graph.policy.encoder import SentenceEncoder, TextEncoder, load_encoder
from hierrouter_graph.policy.protocol import (
    STOP_ACTION,
    Decision,
    FixedRoutePolicy,
    PolicyTraits,
    RoutingPolicy,
)
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicyMismatchError
from hierrouter_graph.state import HopRecord, RouterState

if TYPE_CHECKING:  # imported on first use at run time (``__getattr__``): they need langchain
    from hierrouter_graph.agents import HierRouterDecisionModel, HierRouterMiddleware

__all__ = [
    "PAPER_STAGE_PROMPTS",
    "STOP_ACTION",
    "AdapterError",
    "Decision",
    "DescriptorPolicy",
    "EndpointSpec",
    "FixedRoutePolicy",
    "HierRouterDecisionModel",
    "HierRouterGraph",
    "HierRouterMiddleware",
    "HopRecord",
    "HopResult",
    "InvalidQueryError",
    "MicroBatchedChatModel",
    "MicroBatcher",
    "ModelSourceError",
    "ModelSpec",
    "PolicyMismatchError",
    "PolicyTraits",
    "PoolMember",
    "RemoteModelError",
    "RouterConfig",
    "RouterPolicy",
    "RouterState",
    "RoutingPolicy",
    "SentenceEncoder",
    "TextEncoder",
    "TokenizerCounter",
    "build_endpoint_member",
    "build_pool",
    "build_pool_member",
    "create_hierrouter_graph",
    "default_config",
    "default_policy",
    "hop_cost",
    "load_encoder",
    "run_hop",
]

__version__ = "0.1.0"

_AGENT_EXPORTS = ("HierRouterDecisionModel", "HierRouterMiddleware")


def __getattr__(name: str) -> object:
    """The LangChain-agent classes, imported on first use: they need ``langchain`` (the dev extra),
    which the graph itself does not."""
    if name in _AGENT_EXPORTS:
        from hierrouter_graph import agents

        return getattr(agents, name)
    raise AttributeError(f"module 'hierrouter_graph' has no attribute {name!r}")
