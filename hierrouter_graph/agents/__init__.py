"""HierRouter inside LangChain agents: ``HierRouterMiddleware`` routes every model call of a
``create_agent`` run; ``HierRouterDecisionModel`` plugs the policy into LangChain's own
``ModelRouterMiddleware`` (one decision per run). Needs ``langchain>=1.5`` (the dev extra)."""

from hierrouter_graph.agents.decision import HierRouterDecisionModel
from hierrouter_graph.agents.middleware import AgentCallRecord, HierRouterAgentState, HierRouterMiddleware

__all__ = ["AgentCallRecord", "HierRouterAgentState", "HierRouterDecisionModel", "HierRouterMiddleware"]
