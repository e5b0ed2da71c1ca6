"""The generation worker: one thread owns the model, does all tokenization and generation,
and batches chat jobs the backend can generate together (for the local model: equal
sampling settings; each row keeps its own token budget and repetition penalty)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from peerdiff.backends.base import GenParams, Message


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatJob:
    """Generate one reply to ``conversation`` (batched with jobs of equal ``params``)."""

    conversation: list[Message]
    params: GenParams
    future: Future


@dataclass
class CallJob:
    """Run ``fn()`` on the worker thread (prompt building, soft-prompt generation)."""

    fn: Callable[[], Any]
    future: Future


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

    def submit_chat(self, conversation: list[Message], params: GenParams) -> Future:
        """A future of the :class:`ChatResult`."""
        f: Future = Future()
        self.queue.put(ChatJob(conversation, params, f))
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
        groups: dict[Any, list[ChatJob]] = {}
        stop, room = False, 4 * self.max_batch - len(jobs)  # a round stays bounded
        while jobs:
            for j in jobs:
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

    def _run_chat(self, batch: list[ChatJob]) -> None:
        self.batches.append(len(batch))
        be = self.backend
        try:
            if hasattr(be, "encode"):  # tokenize here, on the worker thread only
                ids = [be.encode(j.conversation) for j in batch]
                settings = [j.params for j in batch] if self.per_row else batch[0].params
                outs = be.generate_ids(ids, settings, desc="serve")
                results = [
                    ChatResult(
                        o, len(p), len(be.tokenizer(o, add_special_tokens=False)["input_ids"])
                    )
                    for o, p in zip(outs, ids)
                ]
            else:
                results = [
                    ChatResult(o) for o in be.chat([j.conversation for j in batch], batch[0].params)
                ]
            for j, r in zip(batch, results):
                j.future.set_result(r)
        except Exception as e:  # hand the error to every waiting request
            for j in batch:
                j.future.set_exception(e)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=5)
