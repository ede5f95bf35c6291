"""The graph LangGraph Studio / ``langgraph dev`` / LangGraph Server load (named in langgraph.json).

Configured by environment, because the server imports this module itself:
``HIERROUTER_CONFIG`` — a RouterConfig YAML/JSON (default: the embedded offline pool);
``HIERROUTER_POLICY`` — a saved RouterPolicy folder (default: the shipped/untrained default).
The uncompiled StateGraph is exported; the server compiles it with its own checkpointer. Imports
are absolute because the server loads this file by path, outside the package.
"""

from __future__ import annotations

import os

from langgraph.graph import StateGraph

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from hierrouter_graph.graph import create_hierrouter_graph

__all__ = ["graph", "make_graph"]


def make_graph() -> StateGraph:
    """Build the served graph from ``HIERROUTER_CONFIG`` / ``HIERROUTER_POLICY``."""
    config_path = os.environ.get("HIERROUTER_CONFIG")
    config = RouterConfig.from_file(config_path) if config_path else default_config()
    return create_hierrouter_graph(config, os.environ.get("HIERROUTER_POLICY") or None)


graph = make_graph()
