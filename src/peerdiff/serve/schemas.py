"""Request bodies of the service, with the limits that answer bad input with a 422."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from peerdiff import methods
from peerdiff.data.formats import MAX_TIMESTAMP


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


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use

    model: Text = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    repetition_penalty: float = Field(default=1.0, ge=0.5, le=2.0)


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
