"""Request bodies of the service, with the limits that answer bad input with a 422."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from peerdiff import methods


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


class ReviewRequest(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    history: list[HistoryReview] | None = Field(default=None, min_length=1, max_length=200)
    item: ItemIn
    rating: float = Field(ge=0, le=5)
    review_title: str = Field(default="", max_length=500)
    method: str = Field(default="rag", max_length=50)
    max_new_tokens: int = Field(default=128, ge=1, le=512)

    @model_validator(mode="after")
    def one_user(self) -> ReviewRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id (a known user) or history (inline)")
        if self.method not in methods.names():
            raise ValueError(f"method {self.method!r} is not one of {list(methods.names())}")
        return self
