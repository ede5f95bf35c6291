"""An OpenAI-compatible HTTP endpoint for the router (``python -m hierrouter_graph serve``).

Any OpenAI client — the ``openai`` SDK, LangChain's ``ChatOpenAI``, chat UIs — gets routing by
pointing its base URL at this server and naming the model ``hierrouter``. Needs the ``serve``
extra (FastAPI, uvicorn, langgraph-checkpoint-sqlite). See docs/deploy.md.
"""

from __future__ import annotations

from hierrouter_graph.serve.app import RouterService, create_app
from hierrouter_graph.serve.feedback import FeedbackError, FeedbackStore
from hierrouter_graph.serve.protocol import MODEL_ID, APIError, parse_request

__all__ = [
    "MODEL_ID",
    "APIError",
    "FeedbackError",
    "FeedbackStore",
    "RouterService",
    "create_app",
    "parse_request",
]
