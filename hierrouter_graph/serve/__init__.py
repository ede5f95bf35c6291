"""An OpenAI-compatible HTTP endpoint for the router (``python -m hierrouter_graph serve``).

Any OpenAI client — the ``openai`` SDK, LangChain's ``ChatOpenAI``, chat UIs — gets routing by
pointing its base URL at this server and naming the model ``hierrouter``. Needs the ``serve``
extra (FastAPI, uvicorn, langgraph-checkpoint-sqlite). See docs/deploy.md.
"""

from __future__ import annotations

from .app import RouterService, create_app
from .feedback import FeedbackError, FeedbackStore
from .protocol import MODEL_ID, APIError, parse_request

__all__ = [
    "MODEL_ID",
    "APIError",
    "FeedbackError",
    "FeedbackStore",
    "RouterService",
    "create_app",
    "parse_request",
]
