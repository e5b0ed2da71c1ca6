"""``peerdiff serve``: an HTTP service over the local model (FastAPI + uvicorn).

- ``POST /v1/chat/completions``: OpenAI-compatible chat completions (no streaming, n = 1),
  so the OpenAI backend, vLLM clients or the ``openai`` package can use the local model.
- ``POST /v1/reviews``: the personalized review for a user (known to the prepared
  benchmark, or given inline as a history) and a new item, by a chosen method.
- ``GET /health``, ``GET /v1/models``.

One worker thread owns the model. Concurrent chat requests with the same generation
settings are batched together (up to ``max_batch``, waiting at most ``max_wait`` seconds
for company), which is what makes a loaded server fast on a CPU. Bad input is answered with
4xx and a message naming the field; nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, Literal

from peerdiff.backends.base import GenParams, Message
from peerdiff.config import PIPELINE_METHODS, SOFT_METHODS
from peerdiff.data.benchmark import UnknownUserError
from peerdiff.data.schema import Item, Review, Sample

log = logging.getLogger(__name__)

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("`peerdiff serve` needs `pip install peerdiff[serve]`") from e


# ----------------------------------------------------------------------------- worker


class GenerationWorker:
    """Serialises model work on one thread and batches chat requests.

    Args:
        backend: the local :class:`peerdiff.backends.hf.HFBackend`.
        max_batch: most conversations generated together.
        max_wait: seconds a request waits for others to share its batch.
    """

    def __init__(self, backend, max_batch: int = 16, max_wait: float = 0.02) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # sizes, for statistics
        self._thread = threading.Thread(target=self._loop, name="peerdiff-generate", daemon=True)
        self._thread.start()

    def submit_chat(self, conversation: list[Message], params: GenParams) -> Future:
        f: Future = Future()
        self.queue.put(("chat", conversation, params, f))
        return f

    def submit_call(self, fn) -> Future:
        """Run ``fn()`` on the worker thread (soft-prompt generation and other model work)."""
        f: Future = Future()
        self.queue.put(("call", fn, None, f))
        return f

    def chat(self, conversations: list[list[Message]], params: GenParams) -> list[str]:
        futures = [self.submit_chat(c, params) for c in conversations]
        return [f.result() for f in futures]

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            # everything already queued, plus what arrives within max_wait
            jobs, stop = [job], False
            deadline = time.monotonic() + self.max_wait
            while len(jobs) < 4 * self.max_batch:
                try:
                    nxt = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._run_jobs(jobs)
            if stop:
                return

    def _run_jobs(self, jobs: list) -> None:
        """Calls one by one; chats grouped by their settings, ``max_batch`` at a time (a
        request with other settings waits for its own batch instead of splitting this one)."""
        groups: dict[GenParams, list] = {}
        for j in jobs:
            if j[0] == "call":
                self._run_call(j)
            else:
                groups.setdefault(j[2], []).append(j)
        for group in groups.values():
            for i in range(0, len(group), self.max_batch):
                self._run_chat(group[i : i + self.max_batch])

    def _run_chat(self, batch: list) -> None:
        self.batches.append(len(batch))
        try:
            outs = self.backend.chat([b[1] for b in batch], batch[0][2], desc="serve")
            for b, o in zip(batch, outs):
                b[3].set_result(o)
        except Exception as e:  # hand the error to every waiting request
            for b in batch:
                b[3].set_exception(e)

    def _run_call(self, job) -> None:
        try:
            job[3].set_result(job[1]())
        except Exception as e:
            job[3].set_exception(e)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=5)


class WorkerBackend:
    """A :class:`ChatBackend` whose calls go through the worker (batched with other requests)."""

    def __init__(self, worker: GenerationWorker, name: str) -> None:
        self.worker = worker
        self.name = name

    def chat(self, conversations, params: GenParams, desc: str = "") -> list[str]:
        return self.worker.chat(list(conversations), params)


# ----------------------------------------------------------------------------- schemas


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use

    model: str = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    repetition_penalty: float = Field(default=1.0, ge=0.5, le=2.0)


class HistoryReview(BaseModel):
    item_title: str = Field(min_length=1, max_length=500)
    item_description: str = Field(default="", max_length=5_000)
    rating: float = Field(ge=0, le=5)
    title: str = Field(default="", max_length=500)
    text: str = Field(min_length=1, max_length=20_000)
    timestamp: int | None = Field(default=None, ge=0)


class ItemIn(BaseModel):
    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=5_000)


REVIEW_METHODS = ("nonperso", "rag", *PIPELINE_METHODS, *SOFT_METHODS)
# methods that compare the user with other users of the benchmark: need a known user
PEER_METHODS = ("dpl", "drp", *SOFT_METHODS)


class ReviewRequest(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    history: list[HistoryReview] | None = Field(default=None, min_length=1, max_length=200)
    item: ItemIn
    rating: float = Field(ge=0, le=5)
    review_title: str = Field(default="", max_length=500)
    method: Literal[REVIEW_METHODS] = "rag"  # type: ignore[valid-type]
    max_new_tokens: int = Field(default=128, ge=1, le=512)

    @model_validator(mode="after")
    def one_user(self) -> ReviewRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id (a known user) or history (inline)")
        return self


# ----------------------------------------------------------------------------- app


def create_app(session, max_batch: int = 16, max_wait: float = 0.02) -> FastAPI:
    """The FastAPI app over a :class:`peerdiff.pipeline.Session` (its local model and data)."""
    backend = session.backend
    bench = session.bench
    worker = GenerationWorker(backend, max_batch, max_wait)
    local = WorkerBackend(worker, backend.name)
    model_name = session.cfg.llm.model

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="peerdiff", version="0.1.0", lifespan=lifespan)
    app.state.worker = worker
    tok = backend.tokenizer

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
        return {"status": "ok", "model": model_name, "users": len(bench.users)}

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
        params = GenParams(
            max_new_tokens=req.max_completion_tokens or req.max_tokens or 256,
            do_sample=req.temperature > 0,
            temperature=max(req.temperature, 1e-5),
            top_p=req.top_p,
            repetition_penalty=req.repetition_penalty,
            seed=req.seed or 0,
        )
        conv = [m.model_dump() for m in req.messages]
        text = await asyncio.wrap_future(worker.submit_chat(conv, params))
        n_prompt = len(backend.encode(conv))
        n_out = len(tok(text, add_special_tokens=False)["input_ids"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if n_out >= params.max_new_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": n_prompt,
                "completion_tokens": n_out,
                "total_tokens": n_prompt + n_out,
            },
        }

    def _request_sample(req: ReviewRequest):
        """(extended benchmark, sample) for the request's user and new item."""
        n = len(bench)
        key = hashlib.sha1(req.model_dump_json().encode()).hexdigest()[:12]
        extra_reviews: list[Review] = []
        extra_items: list[Item] = []
        if req.user_id is not None:
            if req.method in PEER_METHODS:
                latest = bench.latest_sample(req.user_id)  # 404 for unknown users
                profile, sid = latest.profile, latest.sample_id
            else:
                profile, sid = bench.history(req.user_id), f"request:{key}"
            user = req.user_id
        else:
            if req.method in PEER_METHODS:
                raise HTTPException(
                    400,
                    f"method {req.method!r} compares the user with other users of the "
                    "prepared benchmark and needs a known user_id; with an inline history use "
                    "nonperso, rag or pag",
                )
            user = f"inline:{key}"
            for j, h in enumerate(req.history):
                iid = f"inline-item:{key}:{j}"
                extra_items.append(Item(iid, h.item_title, h.item_description))
                extra_reviews.append(
                    Review(
                        n + j,
                        user,
                        iid,
                        h.rating,
                        h.title,
                        h.text,
                        h.timestamp if h.timestamp is not None else j,
                    )
                )
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

    def _generate_review(req: ReviewRequest) -> str:
        from peerdiff.methods import Context, get_method
        from peerdiff.methods.prompts import strip_prefix

        ext, sample = _request_sample(req)
        params = replace(session.gen_params(), max_new_tokens=req.max_new_tokens)
        if req.method in SOFT_METHODS:
            return strip_prefix(_soft(req.method, ext, sample, params))
        count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
        ctx = Context(ext, session.cfg.prompt, count)
        m = get_method(req.method, session.cfg)
        if req.method in PIPELINE_METHODS:
            if req.method != "pag":
                ctx.vectors = session.vectors()

            def call(step, role, ids, convs, max_new_tokens):
                return local.chat(list(convs), replace(params, max_new_tokens=max_new_tokens))

            conv = m.conversations([sample], ctx, call)[0]
        else:
            conv = m.conversation(sample, ctx)
        return strip_prefix(local.chat([conv], params)[0])

    def _soft(method: str, ext, sample: Sample, params: GenParams) -> str:
        from peerdiff.model.adapters import load_adapter
        from peerdiff.train import to_tensors

        best = session.run_dir / "train" / method / "best"
        if not (best / "adapter.safetensors").exists():
            raise HTTPException(
                409,
                f"method {method!r} has no trained adapters in {session.run_dir}; "
                f"run `peerdiff train --method {method}` first",
            )
        ctx = replace(session.soft_context(), bench=ext)
        sm, injector = session._soft_parts(method)
        adapter = load_adapter(best, backend.device).eval()
        prompt = backend.encode(sm.conversation(sample, ctx))
        feats = sm.features([sample], ctx)

        def run() -> str:
            import torch

            def soft(_):
                with torch.no_grad():
                    return adapter(to_tensors(feats, [0], backend.device))[0]

            return backend.generate_soft([prompt], soft, injector, params, desc="serve")[0]

        return worker.submit_call(run).result()

    @app.post("/v1/reviews")
    async def review(req: ReviewRequest) -> dict[str, Any]:
        t0 = time.time()
        text = await asyncio.to_thread(_generate_review, req)
        return {
            "review": text,
            "method": req.method,
            "user_id": req.user_id,
            "seconds": round(time.time() - t0, 3),
        }

    return app


def serve(session, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 16) -> None:
    """Run the service until interrupted."""
    import uvicorn

    uvicorn.run(create_app(session, max_batch), host=host, port=port, log_level="warning")
