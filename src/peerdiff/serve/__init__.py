"""``peerdiff serve``: an HTTP service over the local model (FastAPI + uvicorn).

- ``POST /v1/chat/completions``: OpenAI-compatible chat completions (n = 1; streamed as
  server-sent events of the finished answer, in word-sized chunks, with ``stream: true``),
  so the OpenAI backend, vLLM clients or the ``openai`` package can use the local model.
- ``POST /v1/completions``: legacy text completions of plain-text prompts (no chat
  template), as lm-eval-harness's ``local-completions`` calls them.
- ``POST /v1/reviews``: the personalized review for a user (known to the prepared
  benchmark, or given inline as a history) and a new item, by any registered method.
- ``GET /health``, ``GET /v1/models`` (the one model name the OpenAI routes answer to).

OpenAI fields are honoured, taken at the value that asks for nothing, ignored when they
cannot change the answer, or refused with a 400 naming the field (:mod:`.schemas`).

Everything heavy is built once at start-up (:class:`Service`): the data stages, the
backends, every method, and for each soft-prompt method with an adapter trained under the
current settings, or given as a folder or Hub repository (``--adapter dep=FOLDER``, checked
against the method), its adapter and injector. One worker thread owns the model and does all
tokenization and generation; requests reach it as typed jobs. Concurrent chat requests
and one-call reviews are batched together as the backend allows (the local model: equal
sampling settings, each row with its own budget and penalty; vLLM: any), up to
``max_batch``, waiting at most ``max_wait`` seconds for company. Prompts and soft tokens
come from the same functions as ``peerdiff run``. Bad input gets a 4xx naming the field.

- ``service.py``: :class:`Service`, no HTTP (``peerdiff.Reviewer`` uses it without fastapi).
- ``worker.py``: the generation worker thread and its jobs.
- ``schemas.py``: the request bodies (pydantic), with their limits.
- ``app.py``: FastAPI: routes, API key, body limit, and the table from the library's errors
  to status codes (``ERROR_STATUS``); ``serve``.

Names are imported on first use, so ``peerdiff.serve.Service`` needs no fastapi.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Service": "service",
    "SoftEntry": "service",
    "GenerationWorker": "worker",
    "ChatJob": "worker",
    "CallJob": "worker",
    "ChatResult": "worker",
    "ChatRequest": "schemas",
    "CompletionRequest": "schemas",
    "TextJob": "worker",
    "ReviewRequest": "schemas",
    "create_app": "app",
    "serve": "app",
    "bind_warning": "app",
    "BodyLimit": "app",
    "PromptLimit": "app",
    "ERROR_STATUS": "app",
    "MAX_BODY_BYTES": "app",
    "context_length": "app",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'peerdiff.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"peerdiff.serve.{_LAZY[name]}"), name)
