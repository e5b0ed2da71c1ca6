"""The generation worker: one thread owns the model, does all tokenization and generation,
and batches chat jobs the backend can generate together (for the local model: equal
sampling settings; each row keeps its own token budget and repetition penalty).

A job whose future was cancelled before the worker reached it (a client that went away) is
skipped; one already started runs to its end and its result is dropped."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from peerdiff.backends.base import GenParams, Message, plain_text
from peerdiff.errors import BadRequestError


@dataclass
class ChatResult:
    """One answer: its text, token counts (0 where the backend has no tokenizer here) and
    why it ended (``stop``: the model ended or a stop string was met; ``length``: the token
    budget ran out first)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


@dataclass
class ChatJob:
    """Generate one reply to ``conversation`` (batched with jobs of equal ``params``); the
    text is cut before the first of ``stop`` it contains."""

    conversation: list[Message]
    params: GenParams
    future: Future
    stop: tuple[str, ...] = ()


@dataclass
class TextJob:
    """Continue the plain-text ``prompt`` (no chat template: ``/v1/completions``); batched
    with chat jobs of equal ``params``; cut before the first of ``stop`` as a chat is."""

    prompt: str
    params: GenParams
    future: Future
    stop: tuple[str, ...] = ()


@dataclass
class CallJob:
    """Run ``fn()`` on the worker thread (prompt building, soft-prompt generation)."""

    fn: Callable[[], Any]
    future: Future


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of a plain-text prompt: no chat template, the tokenizer's own special tokens
    added as for any text (a BOS where the model has one), control-token strings inside the
    text kept as text (:func:`~peerdiff.backends.base.plain_text`), as in a chat message."""
    text = plain_text([{"role": "user", "content": text}], tokenizer)[0]["content"]
    return tokenizer(text)["input_ids"]


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest of the ``stop`` strings, and whether one
    was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class GenerationWorker:
    """Serialises model work on one thread and batches chat jobs.

    Args:
        backend: the generation backend (owns a tokenizer when it has ``encode``).
        max_batch: most conversations generated together.
        max_wait: seconds a request waits for others to share its batch.
    """

    def __init__(self, backend, max_batch: int = 16, max_wait: float = 0.02) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # sizes, for statistics
        # settings per row where the backend takes them (local model, vLLM); else one
        # call per distinct setting (API backends)
        self.per_row = hasattr(backend, "encode") and hasattr(backend, "batch_key")
        self.batch_key = backend.batch_key if self.per_row else (lambda params: params)
        self._thread = threading.Thread(target=self._loop, name="peerdiff-generate", daemon=True)
        self._thread.start()

    def submit_chat(
        self, conversation: list[Message], params: GenParams, stop: tuple[str, ...] = ()
    ) -> Future:
        """A future of the :class:`ChatResult`."""
        f: Future = Future()
        self.queue.put(ChatJob(conversation, params, f, stop))
        return f

    def submit_text(self, prompt: str, params: GenParams, stop: tuple[str, ...] = ()) -> Future:
        """A future of the :class:`ChatResult` continuing the plain-text ``prompt``.

        Raises:
            BadRequestError: the backend takes conversations only (an API backend).
        """
        if not self.per_row:
            raise BadRequestError(
                f"the backend {getattr(self.backend, 'name', '')!r} takes conversations only: "
                "plain-text completions need the local model or vLLM"
            )
        f: Future = Future()
        self.queue.put(TextJob(prompt, params, f, stop))
        return f

    def submit_call(self, fn: Callable[[], Any]) -> Future:
        f: Future = Future()
        self.queue.put(CallJob(fn, f))
        return f

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

    def _run_jobs(self, jobs: list[ChatJob | CallJob]) -> None:
        """Calls one by one, then the chats, grouped as the backend can batch them,
        ``max_batch`` at a time (a request that cannot join waits for its own batch instead
        of splitting this one). Chats queued by the calls (a review's prompt is built by a
        call) join this round instead of waiting for the next."""
        groups: dict[Any, list[ChatJob | TextJob]] = {}
        stop, room = False, 4 * self.max_batch - len(jobs)  # a round stays bounded
        while jobs:
            for j in jobs:
                if not j.future.set_running_or_notify_cancel():
                    continue  # cancelled: nobody waits for it
                if isinstance(j, CallJob):
                    try:
                        j.future.set_result(j.fn())
                    except Exception as e:
                        j.future.set_exception(e)
                else:
                    groups.setdefault(self.batch_key(j.params), []).append(j)
            jobs = []
            while not stop and room > 0:  # what the calls queued, never blocking
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                else:
                    jobs.append(nxt)
                    room -= 1
        for group in groups.values():
            for i in range(0, len(group), self.max_batch):
                self._run_chat(group[i : i + self.max_batch])
        if stop:
            self.queue.put(None)  # the loop sees it next

    def _run_chat(self, batch: list[ChatJob | TextJob]) -> None:
        self.batches.append(len(batch))
        be = self.backend
        try:
            if hasattr(be, "encode"):  # tokenize here, on the worker thread only
                ids = [
                    be.encode(j.conversation)
                    if isinstance(j, ChatJob)
                    else encode_text(be.tokenizer, j.prompt)
                    for j in batch
                ]
                settings = [j.params for j in batch] if self.per_row else batch[0].params
                outs = be.generate_ids(ids, settings, desc="serve")
                results = [self._result(o, len(p), j) for o, p, j in zip(outs, ids, batch)]
            else:
                outs = be.chat([j.conversation for j in batch], batch[0].params)
                results = [ChatResult(cut_at_stop(o, j.stop)[0]) for o, j in zip(outs, batch)]
            for j, r in zip(batch, results):
                j.future.set_result(r)
        except Exception as e:  # hand the error to every waiting request
            for j in batch:
                j.future.set_exception(e)

    def _result(self, text: str, prompt_tokens: int, job: ChatJob | TextJob) -> ChatResult:
        """The answer cut at its stop strings, its tokens counted (on the text returned) and
        its finish reason (``length`` when it used the whole budget)."""
        text, stopped = cut_at_stop(text, job.stop)
        n = len(self.backend.tokenizer(text, add_special_tokens=False)["input_ids"])
        full = not stopped and n >= job.params.max_new_tokens
        return ChatResult(text, prompt_tokens, n, "length" if full else "stop")

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=5)
