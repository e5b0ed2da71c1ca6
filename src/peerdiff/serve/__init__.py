"""``peerdiff serve``: an HTTP service over the local model (FastAPI + uvicorn).

- ``POST /v1/chat/completions``: OpenAI-compatible chat completions (no streaming, n = 1),
  so the OpenAI backend, vLLM clients or the ``openai`` package can use the local model.
- ``POST /v1/reviews``: the personalized review for a user (known to the prepared
  benchmark, or given inline as a history) and a new item, by any registered method.
- ``GET /health``, ``GET /v1/models``.

Everything heavy is built once at start-up (:class:`Service`): the data stages, the
backends, every method, and for each soft-prompt method with an adapter trained under the
current settings, its adapter and injector. One worker thread owns the model and does all
tokenization and generation; requests reach it as typed jobs. Concurrent chat requests
and one-call reviews are batched together as the backend allows (the local model: equal
sampling settings, each row with its own budget and penalty; vLLM: any), up to
``max_batch``, waiting at most ``max_wait`` seconds for company. Prompts and soft tokens
come from the same functions as ``peerdiff run``. Bad input gets a 4xx naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from peerdiff import __version__, methods, stages
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.data.schema import Item, Review, Sample
from peerdiff.errors import ConfigError, DependencyError, MissingStageError, UnknownUserError
from peerdiff.serve.worker import CallJob, ChatJob, ChatResult, GenerationWorker

__all__ = [
    "CallJob",
    "ChatJob",
    "ChatRequest",
    "ChatResult",
    "GenerationWorker",
    "ReviewRequest",
    "Service",
    "create_app",
    "serve",
]

log = logging.getLogger(__name__)

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse

    from peerdiff.serve.schemas import ChatRequest, ReviewRequest
except ImportError as e:  # pragma: no cover - depends on the environment
    raise DependencyError("`peerdiff serve` needs `pip install peerdiff[serve]`") from e


# ----------------------------------------------------------------------------- service


@dataclass
class SoftEntry:
    """A soft-prompt method ready to serve: the method, its injector and adapter."""

    method: Any
    injector: Any
    adapter: Any


class Service:
    """Everything a request needs, built once.

    Args:
        cfg: the run's configuration (its run directory holds data stages and adapters).
        backends: the run's backends (tests pass a tiny local model).
    """

    def __init__(
        self,
        cfg: RunConfig,
        backends: Backends | None = None,
        max_batch: int = 16,
        max_wait: float = 0.02,
    ) -> None:
        from peerdiff.model.adapters import load_adapter

        self.cfg = cfg
        self.backends = backends or Backends(cfg)
        self.data = stages.data(cfg, list(methods.names()))
        self.bench = self.data.bench
        self.params = stages.gen_params(cfg)
        self.engine = self.backends.engine
        self.worker = GenerationWorker(self.engine, max_batch, max_wait)
        self.methods = {n: methods.build(n, cfg) for n in methods.names()}
        self.soft: dict[str, SoftEntry] = {}
        self.unavailable: dict[str, str] = {}
        for n in methods.names():
            if not methods.get(n).soft:
                continue
            try:
                st = stages.trained(cfg, n, self.data)
            except MissingStageError as e:
                self.unavailable[n] = str(e)
                continue
            m = self.methods[n]
            inj = stages.common.injector(m, self.backends)
            ad = load_adapter(st.path("best"), self.backends.local.device).eval()
            self.soft[n] = SoftEntry(m, inj, ad)

    def context(self, name: str, bench) -> Any:
        """The method's context over ``bench`` (call on the worker: it counts tokens)."""
        spec = methods.get(name)
        ctx = self.data.context(self.cfg, spec.needs, stages.common.token_counter(self.engine))
        return replace(ctx, bench=bench)

    def request_sample(self, req: ReviewRequest) -> tuple[Any, Sample]:
        """(the benchmark extended with the request's reviews and item, the request's sample)."""
        bench, spec = self.bench, methods.get(req.method)
        n = len(bench)
        key = hashlib.sha1(req.model_dump_json().encode()).hexdigest()[:12]
        extra_reviews: list[Review] = []
        extra_items: list[Item] = []
        if req.user_id is not None:
            if "known_user" in spec.needs:
                latest = bench.latest_sample(req.user_id)  # 404 for unknown users
                profile, sid = latest.profile, latest.sample_id
            else:
                profile, sid = bench.history(req.user_id), f"request:{key}"
            user = req.user_id
        else:
            if "known_user" in spec.needs:
                raise HTTPException(
                    400,
                    f"method {req.method!r} compares the user with other users of the "
                    "prepared benchmark and needs a known user_id; with an inline history use "
                    + ", ".join(
                        n for n in methods.names() if "known_user" not in methods.get(n).needs
                    ),
                )
            user = f"inline:{key}"
            for j, h in enumerate(req.history):
                iid = f"inline-item:{key}:{j}"
                extra_items.append(Item(iid, h.item_title, h.item_description))
                ts = h.timestamp if h.timestamp is not None else j
                extra_reviews.append(Review(n + j, user, iid, h.rating, h.title, h.text, ts))
            order = sorted(range(len(extra_reviews)), key=lambda j: extra_reviews[j].timestamp)
            profile, sid = tuple(n + j for j in order), f"request:{key}"
        last_ts = max(
            [int(bench.timestamps[r]) for r in profile if r < n]
            + [r.timestamp for r in extra_reviews]
            + [0]
        )
        target_item = Item(f"request-item:{key}", req.item.title, req.item.description)
        target = Review(
            n + len(extra_reviews),
            user,
            target_item.item_id,
            req.rating,
            req.review_title,
            "",
            last_ts + 1,
        )
        ext = bench.extended([*extra_reviews, target], [*extra_items, target_item])
        return ext, Sample(sid, "request", user, target.review_id, tuple(profile))

    def review(self, req: ReviewRequest) -> Future:
        """A future of the request's :class:`ChatResult` (the work runs on the worker)."""
        spec = methods.get(req.method)
        ext, sample = self.request_sample(req)  # 400 / 404 come before 409
        if spec.soft and req.method not in self.soft:
            raise HTTPException(
                409, self.unavailable.get(req.method, f"{req.method!r} unavailable")
            )
        params = replace(self.params, max_new_tokens=req.max_new_tokens)
        if spec.soft:
            return self.worker.submit_call(lambda: self._soft(req.method, ext, sample, params))
        done: Future = Future()

        def build() -> None:  # on the worker: prompts (token counts, intermediate calls)
            try:
                P = self.methods[req.method].prompts(
                    [sample], self.context(req.method, ext), self._direct_call(params)
                )
                self.worker.queue.put(ChatJob(P.conversations[0], params, done))
            except Exception as e:
                done.set_exception(e)

        self.worker.submit_call(build)
        return done

    def _direct_call(self, params: GenParams):
        """Intermediate calls of multi-call methods, made from the worker thread."""

        def call(step, role, ids, convs, max_new_tokens):
            be = self.backends.role(role)
            return be.chat(list(convs), replace(params, max_new_tokens=max_new_tokens), desc=step)

        return call

    def _soft(self, name: str, ext, sample: Sample, params: GenParams) -> ChatResult:
        from peerdiff.generate import soft_generate_fn

        e = self.soft[name]
        P = e.method.prompts([sample], self.context(name, ext))
        ids = [self.engine.encode(P.conversations[0], True)]
        gen = soft_generate_fn(self.engine, e.injector, e.adapter, ids, P.features, params, "serve")
        return ChatResult(gen([0])[0], len(ids[0]))


# ----------------------------------------------------------------------------- app


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
            (messages: 64 of 32,000 characters; reviews: 200 history entries of 20,000
            characters; tokens: 2,048 chat / 512 review).
        max_prompt_tokens: a chat whose prompt is longer gets 400 before it reaches the
            worker (default: the model's context window); a budget that would run past the
            context is shortened to fit. Validation errors quote at most a short excerpt of
            the input.
    """
    import copy
    import hmac

    from fastapi.exceptions import RequestValidationError

    from peerdiff.backends.base import encode_prompt
    from peerdiff.methods.prompts import strip_prefix

    worker, model_name = service.worker, service.cfg.llm.model

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="peerdiff", version=__version__, lifespan=lifespan)
    app.state.worker = worker
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    context = context_length(service.engine)
    prompt_cap = (
        min(x for x in (max_prompt_tokens, context) if x)
        if (max_prompt_tokens or context)
        else None
    )
    if max_prompt_tokens is not None and max_prompt_tokens <= 0:
        raise ConfigError(f"--max-prompt-tokens must be > 0, got {max_prompt_tokens}")
    counter = copy.deepcopy(service.engine.tokenizer)  # the worker's stays the worker's
    counting = threading.Lock()  # one tokenizer, one caller at a time

    def prompt_tokens(conv: list[dict]) -> int:
        """Prompt length as the worker will encode it (run off the event loop)."""
        with counting:
            return len(encode_prompt(counter, conv))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
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

    @app.middleware("http")
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

    app.state.service = service

    @app.exception_handler(UnknownUserError)
    async def _unknown(_: Request, e: UnknownUserError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(e)})

    @app.exception_handler(Exception)
    async def _any(_: Request, e: Exception) -> JSONResponse:  # pragma: no cover - safety net
        log.exception("request failed")
        return JSONResponse(
            status_code=500, content={"detail": f"internal error: {type(e).__name__}"}
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "users": len(service.bench.users)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "owned_by": "peerdiff"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> dict[str, Any]:
        if req.stream:
            raise HTTPException(400, "stream=true is not supported; send stream=false")
        conv = [m.model_dump() for m in req.messages]
        budget = req.max_completion_tokens or req.max_tokens or 256
        if prompt_cap is not None:
            from starlette.concurrency import run_in_threadpool

            try:
                n = await run_in_threadpool(prompt_tokens, conv)
            except Exception as e:  # the model's chat template refuses this conversation
                raise HTTPException(400, f"the conversation cannot be templated: {e}") from None
            if n > prompt_cap:
                raise HTTPException(
                    400,
                    f"the prompt is {n} tokens; this service takes at most {prompt_cap} "
                    "(the model's context or --max-prompt-tokens)",
                )
            if context is not None:
                if n >= context:
                    raise HTTPException(400, f"the prompt fills the {context}-token context")
                budget = min(budget, context - n)
        params = GenParams(
            max_new_tokens=budget,
            do_sample=req.temperature > 0,
            temperature=max(req.temperature, 1e-5),
            top_p=req.top_p,
            repetition_penalty=req.repetition_penalty,
            seed=req.seed or 0,
        )
        r: ChatResult = await asyncio.wrap_future(worker.submit_chat(conv, params))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": r.text},
                    "finish_reason": "length"
                    if r.completion_tokens >= params.max_new_tokens
                    else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": r.prompt_tokens + r.completion_tokens,
            },
        }

    @app.post("/v1/reviews")
    async def review(req: ReviewRequest) -> dict[str, Any]:
        t0 = time.time()
        r: ChatResult = await asyncio.wrap_future(service.review(req))
        return {
            "review": strip_prefix(r.text),
            "method": req.method,
            "user_id": req.user_id,
            "seconds": round(time.time() - t0, 3),
        }

    return app


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
) -> None:
    """Build the service, then run it until interrupted."""
    import sys

    import uvicorn

    warning = bind_warning(host, api_key)
    if warning:
        print(warning, file=sys.stderr)
    app = create_app(
        Service(cfg, max_batch=max_batch), api_key=api_key, max_prompt_tokens=max_prompt_tokens
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
