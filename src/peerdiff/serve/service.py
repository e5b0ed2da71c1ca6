"""The service without HTTP: methods, contexts and adapters built once, reviews and chats
generated on one worker thread. ``peerdiff serve`` puts it behind FastAPI (:mod:`.app`);
``peerdiff.Reviewer`` calls it directly, so nothing here imports a web framework.

Refusals are library errors (:mod:`peerdiff.errors`); the app maps them to status codes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerdiff import methods, stages
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.data.schema import Item, Review, Sample
from peerdiff.errors import BadRequestError, ConfigError, MissingStageError
from peerdiff.serve.worker import ChatJob, ChatResult, GenerationWorker

if TYPE_CHECKING:
    from peerdiff.serve.schemas import ReviewRequest

log = logging.getLogger(__name__)


@dataclass
class SoftEntry:
    """A soft-prompt method ready to serve: the method, its injector and adapter, and where
    the adapter came from (the run's ``train/<method>/best`` or a given folder or repo)."""

    method: Any
    injector: Any
    adapter: Any
    source: str = ""


class Service:
    """Everything a request needs, built once.

    Args:
        cfg: the run's configuration (its run directory holds data stages and adapters).
        backends: the run's backends (tests pass a tiny local model).
        max_batch: most conversations the worker generates together.
        max_wait: seconds a request waits for others to share its batch.
        adapters: method -> an adapter folder or Hub repository id (a pushed
            ``train/<method>/best``), used instead of the run's train stage; checked against
            the method under ``cfg`` (:func:`peerdiff.hub.method_adapter`). The data stages
            still come from ``cfg``'s run directory (computed when missing).

    Raises:
        ConfigError: an adapter that does not fit its method or the run's models (the
            message names the setting), or a method without adapters.
    """

    def __init__(
        self,
        cfg: RunConfig,
        backends: Backends | None = None,
        max_batch: int = 16,
        max_wait: float = 0.02,
        adapters: Mapping[str, str | Path] | None = None,
    ) -> None:
        given = dict(adapters or {})
        for n in given:
            if not methods.get(n).soft:  # ConfigError for an unknown name
                raise ConfigError(
                    f"method {n!r} has no adapter; adapters are for soft-prompt methods"
                )
        self.cfg = cfg
        self.backends = backends or Backends(cfg)
        self.data = stages.data(cfg, list(methods.names()))
        self.bench = self.data.bench
        self.params = stages.gen_params(cfg)
        self.engine = self.backends.engine
        self.methods = {n: methods.build(n, cfg) for n in methods.names()}
        self.soft: dict[str, SoftEntry] = {}
        self.unavailable: dict[str, str] = {}
        for n in methods.names():
            if not methods.get(n).soft:
                continue
            st = None
            if n not in given:
                try:
                    st = stages.trained(cfg, n, self.data)
                except MissingStageError as e:
                    self.unavailable[n] = (
                        f"{e}; or use an adapter folder: `peerdiff serve --adapter {n}=FOLDER`, "
                        f"Reviewer(..., adapters={{{n!r}: FOLDER}})"
                    )
                    continue
            ms = stages.MethodSplit(cfg, n, "test", self.data, self.backends, st, items=[])
            if n in given:
                ad, source = self._given_adapter(n, given[n]), str(given[n])
            else:
                ad, source = ms.load_adapter(self.backends.local.device), str(st.path("best"))
            self.soft[n] = SoftEntry(ms.method, ms.injector(), ad, source)
            log.info("%s: adapter %s", n, source)
        self.worker = GenerationWorker(self.engine, max_batch, max_wait)  # after the checks

    def _given_adapter(self, name: str, path_or_repo: str | Path) -> Any:
        """A folder's (or repository's) adapter for method ``name``, checked against this
        run's LLM, encoder and method settings."""
        from peerdiff.hub import method_adapter, model_revision

        local = self.backends.local
        emb = self.data.emb
        return method_adapter(
            path_or_repo,
            self.cfg,
            name,
            llm_hidden=local.model.config.hidden_size,
            llm_revision=model_revision(getattr(local, "path", None)),
            encoder=emb.manifest()["encoder"] if emb is not None else None,
            device=local.device,
        )

    def context(self, name: str, bench) -> Any:
        """The method's context over ``bench`` (call on the worker: it counts tokens)."""
        spec = methods.get(name)
        ctx = self.data.context(self.cfg, spec.needs, stages.common.token_counter(self.engine))
        return replace(ctx, bench=bench)

    def request_sample(self, req: ReviewRequest) -> tuple[Any, Sample]:
        """(the benchmark extended with the request's reviews and item, the request's sample).

        Raises:
            UnknownUserError: ``req.user_id`` is not in the prepared benchmark.
            BadRequestError: an inline history for a method that compares known users.
        """
        bench, spec = self.bench, methods.get(req.method)
        n = len(bench)
        key = hashlib.sha1(req.model_dump_json().encode()).hexdigest()[:12]
        extra_reviews: list[Review] = []
        extra_items: list[Item] = []
        if req.user_id is not None:
            if "known_user" in spec.needs:
                latest = bench.latest_sample(req.user_id)  # UnknownUserError
                profile, sid = latest.profile, latest.sample_id
            else:
                profile, sid = bench.history(req.user_id), f"request:{key}"
            user = req.user_id
        else:
            if "known_user" in spec.needs:
                raise BadRequestError(
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
        """A future of the request's :class:`ChatResult` (the work runs on the worker).

        Raises:
            UnknownUserError, BadRequestError: see :meth:`request_sample` (checked first).
            MissingStageError: a soft-prompt method without an adapter trained under the
                current settings (the message names the command that trains it).
        """
        spec = methods.get(req.method)
        ext, sample = self.request_sample(req)  # unknown user / bad request before missing stage
        if spec.soft and req.method not in self.soft:
            raise MissingStageError(self.unavailable.get(req.method, f"{req.method!r} unavailable"))
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
