"""Any OpenAI-compatible chat server (vLLM, llama.cpp, ``peerdiff serve``, OpenAI...).

Requests run ``concurrency`` at a time; the ``openai`` client retries connection errors,
timeouts, 429 and 5xx answers ``max_retries`` times with exponential backoff. A server that
cannot be reached raises :class:`BackendError` naming the URL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from peerdiff.backends.base import ChatBackend, Completion, GenParams, Message
from peerdiff.errors import BackendError, DependencyError


class OpenAIBackend(ChatBackend):
    """Chat completions over HTTP.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (default: ``OPENAI_BASE_URL``).
        model: the model name the server expects.
        api_key_env: environment variable holding the key (local servers accept anything).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        try:
            import openai
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise DependencyError("the OpenAI backend needs `pip install peerdiff[openai]`") from e
        self._openai = openai
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.concurrency = concurrency
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",
            timeout=timeout,
            max_retries=max_retries,
        )
        self.name = f"openai:{model}@{self.base_url}"

    def _one(self, conversation: list[Message], params: GenParams) -> Completion:
        kwargs = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature if params.do_sample else 0.0,
            "top_p": params.top_p if params.do_sample else 1.0,
            "seed": params.seed,
        }
        if params.repetition_penalty != 1.0:  # not in the OpenAI API; vLLM and ours accept it
            kwargs["extra_body"] = {"repetition_penalty": params.repetition_penalty}
        try:
            resp = self.client.chat.completions.create(**kwargs)
        except self._openai.APIConnectionError as e:
            raise BackendError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} "
                f"(model {self.model!r}): {e}. Is it running? `peerdiff serve` starts one."
            ) from e
        except self._openai.APIStatusError as e:
            raise BackendError(
                f"{self.base_url} answered {e.status_code} for model {self.model!r}: {e.message}"
            ) from e
        if not resp.choices:
            raise BackendError(f"{self.base_url} returned no choices for model {self.model!r}")
        choice = resp.choices[0]
        msg = choice.message
        # servers with a reasoning parser (vLLM, DeepSeek) split the thinking off
        extra = getattr(msg, "model_extra", None) or {}
        reasoning = (
            getattr(msg, "reasoning_content", None)
            or extra.get("reasoning_content")
            or extra.get("reasoning")
            or ""
        )
        return Completion(
            (msg.content or "").strip(), str(reasoning), choice.finish_reason or "stop"
        )

    def complete(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[Completion]:
        out: list[Completion] = [Completion("")] * len(conversations)
        with (
            ThreadPoolExecutor(self.concurrency) as pool,
            tqdm(
                total=len(conversations), desc=desc, unit="request", disable=len(conversations) <= 1
            ) as bar,
        ):
            futures = {pool.submit(self._one, c, params): i for i, c in enumerate(conversations)}
            for f in futures:
                out[futures[f]] = f.result()
                bar.update()
        return out
