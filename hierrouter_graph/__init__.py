"""hierrouter-graph: HierRouter (arXiv 2511.09873) as a LangGraph graph.

A PPO-trained router answers each query in L hops over a pool of small chat models, choosing the
next model from the context so far, the stage and the cost spent.
"""

from typing import TYPE_CHECKING

from .adapters import AdapterError
from .config import PAPER_STAGE_PROMPTS, EndpointSpec, ModelSpec, RouterConfig
from .cost import hop_cost
from .defaults import default_config, default_policy
from .dynamic_policy import DescriptorPolicy
from .encoder import SentenceEncoder, TextEncoder, load_encoder
from .graph import HierRouterGraph, InvalidQueryError, create_hierrouter_graph
from .hop import HopResult, run_hop
from .microbatch import MicroBatchedChatModel, MicroBatcher
from .models import ModelSourceError, build_pool_member
from .policy import STOP_ACTION, Decision, FixedRoutePolicy, PolicyTraits, RoutingPolicy
from .policy_signature import PolicyMismatchError
from .pool import PoolMember, TokenizerCounter
from .pool_builder import build_pool
from .remote import RemoteModelError, build_endpoint_member
from .state import HopRecord, RouterState
from .trained_policy import RouterPolicy

if TYPE_CHECKING:  # imported on first use at run time (``__getattr__``): they need langchain
    from .agents import HierRouterDecisionModel, HierRouterMiddleware

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
        from . import agents

        return getattr(agents, name)
    raise AttributeError(f"module 'hierrouter_graph' has no attribute {name!r}")
