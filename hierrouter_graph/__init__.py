"""hierrouter-graph: HierRouter (arXiv 2511.09873) as a LangGraph graph.

A PPO-trained router answers each query in L hops over a pool of small chat models, choosing the
next model from the context so far, the stage and the cost spent.
"""

from .config import PAPER_STAGE_PROMPTS, ModelSpec, RouterConfig
from .cost import hop_cost
from .defaults import default_config, default_policy
from .encoder import TextEncoder, load_encoder
from .graph import HierRouterGraph, InvalidQueryError, create_hierrouter_graph
from .hop import HopResult, run_hop
from .models import ModelSourceError, build_pool_member
from .policy import Decision, FixedRoutePolicy, PolicyMismatchError, RouterPolicy, RoutingPolicy
from .pool import PoolMember, TokenizerCounter
from .state import HopRecord, RouterState

__all__ = [
    "PAPER_STAGE_PROMPTS",
    "Decision",
    "FixedRoutePolicy",
    "HierRouterGraph",
    "HopRecord",
    "HopResult",
    "InvalidQueryError",
    "ModelSourceError",
    "ModelSpec",
    "PolicyMismatchError",
    "PoolMember",
    "RouterConfig",
    "RouterPolicy",
    "RouterState",
    "RoutingPolicy",
    "TextEncoder",
    "TokenizerCounter",
    "build_pool_member",
    "create_hierrouter_graph",
    "default_config",
    "default_policy",
    "hop_cost",
    "load_encoder",
    "run_hop",
]

__version__ = "0.1.0"
