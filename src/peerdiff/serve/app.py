"""The HTTP layer of ``peerdiff serve`` (FastAPI + uvicorn) over a
:class:`~peerdiff.serve.service.Service`.

HTTP lives here and nowhere else: the routes, the API key, the body limit, and one table,
:data:`ERROR_STATUS`, from the errors the library raises to the status codes the app answers
with (their messages become the ``detail``; on the OpenAI routes the body also carries
OpenAI's ``error`` object, so that the ``openai`` client reads its ``param`` and ``code``).

The OpenAI routes serve the one model ``/v1/models`` lists (another name is a 404,
``model_not_found``), honour or refuse each field (:mod:`.schemas`), and stream chat
completions as server-sent events. Streaming is of the finished text: the worker generates a
whole answer at once, which is then sent in word-sized chunks; tokens are not streamed as
they are decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from peerdiff import __version__
from peerdiff.backends.base import GenParams, encode_prompt
from peerdiff.config import RunConfig
from peerdiff.errors import (
    BadRequestError,
    ConfigError,
    DependencyError,
    MissingStageError,
    PeerdiffError,
    PromptTooLongError,
    UnknownModelError,
    UnknownUserError,
    did_you_mean,
)
from peerdiff.methods.prompts import strip_prefix
from peerdiff.serve.service import Service
from peerdiff.serve.worker import ChatResult, encode_text

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    from peerdiff.serve.schemas import (
        ChatRequest,
        CompletionRequest,
        OpenAIRequest,
        ReviewRequest,
    )
except ImportError as e:  # pragma: no cover - depends on the environment
    raise DependencyError("`peerdiff serve` needs `pip install peerdiff[serve]`") from e

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, counted on the bytes
    actually received (a chunked body has no Content-Length to check), before the app parses
    anything. Bodies within the limit are handed on unchanged."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                await self._reject(send)
                return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        body, handed = b"".join(chunks), False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        detail = f'{{"detail": "request body over {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": detail})


def context_length(engine) -> int | None:
    """The engine model's context window in tokens, when it says."""
    cfg = getattr(getattr(engine, "model", None), "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(engine, "max_model_len", None)
    return int(n) if n else None


def _excerpt(value: Any, limit: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


# ----------------------------------------------------------------------------- errors

# The library's refusals and their status codes (a subclass answers as its base:
# PromptTooLongError is a BadRequestError). Invalid bodies are 422 (:func:`_invalid`), bodies
# over the limit 413 (:class:`BodyLimit`), a missing or wrong API key 401 (:func:`_guard`),
# anything else 500.
ERROR_STATUS: dict[type[Exception], int] = {
    BadRequestError: 400,
    UnknownModelError: 404,
    UnknownUserError: 404,
    MissingStageError: 409,
}
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models")


def openai_error(e: Exception) -> dict[str, Any]:
    """OpenAI's ``error`` object of a refusal (its ``param`` and ``code`` where it has them)."""
    return {
        "message": str(e),
        "type": "invalid_request_error",
        "param": getattr(e, "param", None),
        "code": getattr(e, "code", None),
    }


async def _refused(request: Request, e: Exception) -> JSONResponse:
    """The status :data:`ERROR_STATUS` gives the error's class (or nearest base); on the
    OpenAI routes with OpenAI's ``error`` object beside the ``detail``."""
    status = next(ERROR_STATUS[c] for c in type(e).__mro__ if c in ERROR_STATUS)
    content: dict[str, Any] = {"detail": str(e)}
    if request.url.path in OPENAI_PATHS:
        content["error"] = openai_error(e)
    return JSONResponse(status_code=status, content=content)


async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    """422, quoting at most a short excerpt of each bad value."""
    errors = [
        {
            "loc": list(err.get("loc", ())),
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
            **({"input": _excerpt(err["input"])} if "input" in err else {}),
        }
        for err in e.errors()[:20]
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _internal(_: Request, e: Exception) -> JSONResponse:  # pragma: no cover - safety net
    log.exception("request failed")
    return JSONResponse(status_code=500, content={"detail": f"internal error: {type(e).__name__}"})


def exception_handlers() -> dict[Any, Any]:
    """The app's exception handlers: :data:`ERROR_STATUS`, then 422 and 500."""
    return {
        **dict.fromkeys(ERROR_STATUS, _refused),
        RequestValidationError: _invalid,
        Exception: _internal,
    }


def _guard(api_key: str | None):
    """HTTP middleware: when ``api_key`` is set, every route but ``/health`` needs
    ``Authorization: Bearer <key>`` (401 otherwise)."""

    async def guard(request: Request, call_next):
        if api_key and request.url.path != "/health":
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            ok = scheme.lower() == "bearer"  # the scheme is case-insensitive (RFC 7235)
            if not (hmac.compare_digest(token.strip().encode(), api_key.encode()) and ok):
                return JSONResponse(
                    status_code=401,
                    content={
                        "detail": "missing or wrong API key: send Authorization: Bearer <key>"
                    },
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    return guard


# ----------------------------------------------------------------------------- OpenAI


class PromptLimit:
    """A prompt's length as the worker will encode it, and what follows from it: a
    refusal, or a token budget shortened to fit the context.

    Args:
        engine: the generation backend (its tokenizer is copied: the worker's stays the
            worker's).
        max_prompt_tokens: the longest prompt taken (default: the model's context window,
            which also bounds it).

    Raises:
        ConfigError: ``max_prompt_tokens`` is not positive.
    """

    def __init__(self, engine, max_prompt_tokens: int | None = None) -> None:
        if max_prompt_tokens is not None and max_prompt_tokens <= 0:
            raise ConfigError(f"--max-prompt-tokens must be > 0, got {max_prompt_tokens}")
        self.context = context_length(engine)
        caps = [x for x in (max_prompt_tokens, self.context) if x]
        self.cap = min(caps) if caps else None
        self._tokenizer = copy.deepcopy(engine.tokenizer)
        self._lock = threading.Lock()  # one tokenizer, one caller at a time

    def count(self, prompt: list[dict] | str) -> int:
        """Prompt tokens of a conversation, or of a plain-text prompt (blocking: run it off
        the event loop).

        Raises:
            BadRequestError: the model's chat template refuses the conversation.
        """
        with self._lock:
            if isinstance(prompt, str):
                return len(encode_text(self._tokenizer, prompt))
            try:
                return len(encode_prompt(self._tokenizer, prompt))
            except Exception as e:
                raise BadRequestError(f"the conversation cannot be templated: {e}") from None

    def budget(self, n: int, wanted: int) -> int:
        """New tokens for a prompt of ``n`` tokens: ``wanted``, shortened to fit the context.

        Raises:
            PromptTooLongError: the prompt is over the cap, or fills the context.
        """
        if self.cap is None:
            return wanted
        if n > self.cap:
            raise PromptTooLongError(
                f"the prompt is {n} tokens; this service takes at most {self.cap} "
                "(the model's context or --max-prompt-tokens)"
            )
        if self.context is None:
            return wanted
        if n >= self.context:
            raise PromptTooLongError(f"the prompt fills the {self.context}-token context")
        return min(wanted, self.context - n)


def admit(req: OpenAIRequest, served: list[str]) -> None:
    """Check an OpenAI request before any work: the model, then every field.

    Raises:
        UnknownModelError: ``req.model`` is not one of ``served`` (404).
        BadRequestError: a field asks for what the service does not do (400, naming it).
    """
    if req.model not in served:
        raise UnknownModelError(
            f"model {req.model!r} is not served here; this service serves {served}"
            + did_you_mean(req.model, served)
        )
    refused = req.refusal()
    if refused is not None:
        raise BadRequestError(refused[1], param=refused[0])


def sampling(req: OpenAIRequest, budget: int) -> GenParams:
    """The sampling settings of an OpenAI request (temperature 0: greedy)."""
    return GenParams(
        max_new_tokens=budget,
        do_sample=req.temperature > 0,
        temperature=max(req.temperature, 1e-5),
        top_p=req.top_p,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed or 0,
    )


def usage(results: list[ChatResult]) -> dict[str, int]:
    p = sum(r.prompt_tokens for r in results)
    c = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion(req: ChatRequest, r: ChatResult) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` object of one answer."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
        ],
        "usage": usage([r]),
    }


def text_completion(req: CompletionRequest, results: list[ChatResult]) -> dict[str, Any]:
    """The OpenAI ``text_completion`` object: one choice per prompt, in order."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ],
        "usage": usage(results),
    }


def words(text: str) -> list[str]:
    """``text`` in word-sized pieces, each with the whitespace before it; they join back to
    ``text`` exactly."""
    return [p for p in re.split(r"(?<=\S)(?=\s)", text) if p]


def _event(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def chat_stream(req: ChatRequest, future: Future) -> AsyncIterator[str]:
    """Server-sent events of a chat answer in OpenAI's ``chat.completion.chunk`` format: the
    role at once, then, when the worker has the whole answer, its words as content deltas,
    a chunk with the finish reason, the usage (with ``stream_options.include_usage``), and
    ``data: [DONE]``. Chunks come as fast as they are written: the text was generated
    before the first word is sent, not token by token.

    A failure after the stream began (the status is sent) is an ``error`` event, which
    the ``openai`` client raises.
    """
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": req.model,
    }
    extra = {"usage": None} if req.include_usage else {}

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**head, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    try:
        r: ChatResult = await asyncio.wrap_future(future)
    except Exception as e:
        if not isinstance(e, PeerdiffError):
            log.exception("streamed chat failed")
            e = RuntimeError(f"internal error: {type(e).__name__}")
        yield _event({"error": {**openai_error(e), "type": "server_error"}})
        yield _event("[DONE]")
        return
    for piece in words(r.text):
        yield chunk({"content": piece})
    yield chunk({}, r.finish_reason)
    if req.include_usage:
        yield _event({**head, "choices": [], "usage": usage([r])})
    yield _event("[DONE]")


# ----------------------------------------------------------------------------- routes


async def health(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    return {"status": "ok", "model": service.cfg.llm.model, "users": len(service.bench.users)}


def served_models(service: Service) -> list[str]:
    """The model names the OpenAI routes answer to: the ``llm.model`` the service runs."""
    return [service.cfg.llm.model]


async def models(request: Request) -> dict[str, Any]:
    state = request.app.state
    ctx = {"max_model_len": state.prompt_limit.context} if state.prompt_limit.context else {}
    data = [
        {"id": n, "object": "model", "created": state.created, "owned_by": "peerdiff", **ctx}
        for n in state.models
    ]
    return {"object": "list", "data": data}


async def chat(req: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
    state = request.app.state
    admit(req, state.models)
    conv = [m.model_dump() for m in req.messages]
    budget = req.max_completion_tokens or req.max_tokens or 256
    if state.prompt_limit.cap is not None:
        n = await run_in_threadpool(state.prompt_limit.count, conv)
        budget = state.prompt_limit.budget(n, budget)
    future = state.worker.submit_chat(conv, sampling(req, budget), req.stops)
    if req.stream:
        return StreamingResponse(
            chat_stream(req, future),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return completion(req, await asyncio.wrap_future(future))


async def completions(req: CompletionRequest, request: Request) -> dict[str, Any]:
    state = request.app.state
    admit(req, state.models)
    if req.stream:
        raise BadRequestError(
            "stream=true is not supported on /v1/completions (chat completions stream); "
            "send stream=false",
            param="stream",
        )
    prompts = req.texts()
    budgets = [req.max_tokens] * len(prompts)
    if state.prompt_limit.cap is not None:
        lengths = await run_in_threadpool(lambda: [state.prompt_limit.count(p) for p in prompts])
        budgets = [state.prompt_limit.budget(n, req.max_tokens) for n in lengths]
    futures = [
        state.worker.submit_text(p, sampling(req, b), req.stops) for p, b in zip(prompts, budgets)
    ]
    results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    return text_completion(req, list(results))


async def review(req: ReviewRequest, request: Request) -> dict[str, Any]:
    t0 = time.time()
    r: ChatResult = await asyncio.wrap_future(request.app.state.service.review(req))
    return {
        "review": strip_prefix(r.text),
        "method": req.method,
        "user_id": req.user_id,
        "seconds": round(time.time() - t0, 3),
    }


ROUTES = [
    ("GET", "/health", health),
    ("GET", "/v1/models", models),
    ("POST", "/v1/chat/completions", chat),
    ("POST", "/v1/completions", completions),
    ("POST", "/v1/reviews", review),
]


def create_app(
    service: Service,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_prompt_tokens: int | None = None,
) -> FastAPI:
    """The FastAPI app over a :class:`Service`.

    Args:
        api_key: when set, every route but ``/health`` needs ``Authorization: Bearer <key>``
            (401 otherwise).
        max_body_bytes: larger request bodies get 413 (counted on the bytes received, so a
            chunked body cannot pass). Within a body, the request schemas cap each field
            (messages: 64 of 32,000 characters; completion prompts: 64 of 100,000
            characters; reviews: 200 history entries of 20,000 characters; tokens: 2,048
            chat and completion / 512 review).
        max_prompt_tokens: a chat or completion prompt that is longer gets 400 before it
            reaches the worker (default: the model's context window); a budget that would run past the
            context is shortened to fit. Validation errors quote at most a short excerpt of
            the input.

    Raises:
        ConfigError: ``max_prompt_tokens`` is not positive.
    """
    limit = PromptLimit(service.engine, max_prompt_tokens)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        service.worker.close()
        service.backends.release_engine()  # a vLLM engine's processes and memory go too

    app = FastAPI(
        title="peerdiff",
        version=__version__,
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
    )
    app.state.service, app.state.worker, app.state.prompt_limit = service, service.worker, limit
    app.state.models, app.state.created = served_models(service), int(time.time())
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.middleware("http")(_guard(api_key))  # outermost: 401 before the body is read
    for method, path, endpoint in ROUTES:
        app.add_api_route(path, endpoint, methods=[method], response_model=None)
    return app


# ----------------------------------------------------------------------------- server


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind_warning(host: str, api_key: str | None) -> str | None:
    """A warning for a service reachable from other machines without an API key."""
    if host in LOCAL_HOSTS or api_key:
        return None
    return (
        f"peerdiff serve: listening on {host} without an API key: anyone who can reach this "
        "port can use the model and read reviews of the prepared benchmark. Pass --api-key "
        "or set PEERDIFF_API_KEY."
    )


def serve(
    cfg: RunConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 16,
    api_key: str | None = None,
    max_prompt_tokens: int | None = None,
    adapters: Mapping[str, str | Path] | None = None,
) -> None:
    """Build the service, then run it until interrupted; ``adapters`` as in
    :class:`Service`."""
    import sys

    import uvicorn

    warning = bind_warning(host, api_key)
    if warning:
        print(warning, file=sys.stderr)
    app = create_app(
        Service(cfg, max_batch=max_batch, adapters=adapters),
        api_key=api_key,
        max_prompt_tokens=max_prompt_tokens,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
