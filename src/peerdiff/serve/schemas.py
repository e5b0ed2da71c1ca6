"""Request bodies of the service, with the limits that answer bad input with a 422, and
what the OpenAI routes do with each OpenAI field: honour it, take it at the value that asks
for nothing (:data:`NOT_IMPLEMENTED`), ignore it when it cannot change the answer
(:data:`IGNORED`), or refuse it (:meth:`OpenAIRequest.refusal`: a 400 naming the field)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from peerdiff import methods
from peerdiff.data.formats import MAX_TIMESTAMP
from peerdiff.errors import BadRequestError


def _utf8(text: str) -> str:
    """Text that can be encoded: JSON allows lone surrogates (``"\\ud800"``), UTF-8 not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"invalid text: a lone surrogate at character {e.start}") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]
SEED_MAX = 2**63 - 1


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text = Field(max_length=32_000)


StopText = Annotated[Text, Field(min_length=1, max_length=200)]
PromptText = Annotated[Text, Field(min_length=1, max_length=100_000)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = False
    include_obfuscation: bool | None = None  # taken, and ignored: no padding is added


# OpenAI fields the service does not implement, taken only at a value that asks for nothing
# (or null); any other value is a 400 naming the field. (accepted values, what to know)
NOT_IMPLEMENTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((False,), "no token log-probabilities are returned"),
    "top_logprobs": ((0,), "no token log-probabilities are returned"),
    "response_format": (({"type": "text"},), "only text: no JSON mode or schema"),
    "tools": (([],), "no function calling"),
    "tool_choice": (("none", "auto"), "no function calling"),
    "functions": (([],), "no function calling"),
    "function_call": (("none", "auto"), "no function calling"),
    "frequency_penalty": ((0,), "send repetition_penalty (1 = off) instead"),
    "presence_penalty": ((0,), "send repetition_penalty (1 = off) instead"),
    "logit_bias": (({},), "logits are not biased"),
    "modalities": ((["text"],), "only text"),
    "audio": ((), "only text"),
    "prediction": ((), "no predicted outputs"),
    "reasoning_effort": ((), "the model's reasoning is not configurable here"),
    "verbosity": ((), "not configurable here"),
    "web_search_options": ((), "no web search"),
    "moderation": ((), "no moderation"),
    "store": ((False,), "completions are not stored"),
    "best_of": ((1,), "one candidate per prompt"),
    "echo": ((False,), "the prompt is not echoed"),
    "suffix": (("",), "no insertion after a suffix"),
}
# OpenAI fields that do not change the answer: taken and ignored.
IGNORED = frozenset(
    {
        "user",
        "metadata",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "parallel_tool_calls",
    }
)


def _same(value: Any, accepted: Any) -> bool:
    """``value == accepted``, with booleans equal only to booleans (``0`` is not ``false``)."""
    if isinstance(value, bool) or isinstance(accepted, bool):
        return type(value) is type(accepted) and value == accepted
    return value == accepted


def _excerpt(value: Any, limit: int = 60) -> str:
    """``value`` as JSON (the client sent JSON), cut at ``limit`` characters."""
    r = json.dumps(value)
    return r if len(r) <= limit else r[:limit] + "..."


class OpenAIRequest(BaseModel):
    """What the two OpenAI routes share. Fields the model does not declare are kept
    (``extra="allow"``) for :meth:`refusal` to judge: the service answers what it was asked,
    or says which field it cannot honour, and never silently drops a setting."""

    model_config = ConfigDict(extra="allow")

    model: Text = Field(max_length=200)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    stop: StopText | Annotated[list[StopText], Field(max_length=16)] | None = None
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    repetition_penalty: float = Field(default=1.0, ge=0.5, le=2.0)  # vLLM's extension

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop strings, as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def refusal(self) -> tuple[str, str] | None:
        """``(field, message)`` of the first field asking for what the service does not do,
        or ``None`` when it can answer the request as posed."""
        if self.n != 1:
            return "n", f"n={self.n} is not supported: one choice per request (send n=1)"
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed with stream=true"
        for field, value in (self.model_extra or {}).items():
            if field in IGNORED or value is None:
                continue
            if field not in NOT_IMPLEMENTED:
                return field, f"unrecognized request field {field!r}"
            accepted, why = NOT_IMPLEMENTED[field]
            if not any(_same(value, a) for a in accepted):
                ok = " or ".join(_excerpt(a) for a in accepted) or "null"
                return field, (
                    f"{field}={_excerpt(value)} is not supported: {why} "
                    f"(send {ok}, or leave it out)"
                )
        return None


class ChatRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2048)


class CompletionRequest(OpenAIRequest):
    """A legacy completion: a text prompt, or a list of them (answered in order)."""

    prompt: (
        PromptText
        | Annotated[list[PromptText], Field(min_length=1, max_length=64)]
        | list[int]
        | list[list[int]]
    )
    max_tokens: int = Field(default=16, ge=1, le=2048)  # OpenAI's default

    def texts(self) -> list[str]:
        """The prompts as a list of texts.

        Raises:
            BadRequestError: the prompt is token ids.
        """
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and all(isinstance(p, str) for p in self.prompt):
            return list(self.prompt)
        raise BadRequestError(
            "prompt: token ids are not supported; send text or a list of texts "
            "(lm-eval-harness: tokenized_requests=False)",
            param="prompt",
        )


class HistoryReview(BaseModel):
    item_title: Text = Field(min_length=1, max_length=500)
    item_description: Text = Field(default="", max_length=5_000)
    rating: float = Field(ge=0, le=5)
    title: Text = Field(default="", max_length=500)
    text: Text = Field(min_length=1, max_length=20_000)
    timestamp: int | None = Field(default=None, ge=0, le=MAX_TIMESTAMP)


class ItemIn(BaseModel):
    title: Text = Field(min_length=1, max_length=500)
    description: Text = Field(default="", max_length=5_000)


class ReviewRequest(BaseModel):
    user_id: Text | None = Field(default=None, min_length=1, max_length=200)
    history: list[HistoryReview] | None = Field(default=None, min_length=1, max_length=200)
    item: ItemIn
    rating: float = Field(ge=0, le=5)
    review_title: Text = Field(default="", max_length=500)
    method: Text = Field(default="rag", max_length=50)
    max_new_tokens: int = Field(default=128, ge=1, le=512)

    @model_validator(mode="after")
    def one_user(self) -> ReviewRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id (a known user) or history (inline)")
        if self.method not in methods.names():
            raise ValueError(f"method {self.method!r} is not one of {list(methods.names())}")
        return self
