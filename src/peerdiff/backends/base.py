"""The one interface every LLM call goes through, and its generation parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    seed: int = 0
    penalty_scope: str = "generated"  # "generated": own output only; "prompt": + prompt tokens


@runtime_checkable
class ChatBackend(Protocol):
    """Generates one reply per conversation (batched internally as the backend sees fit)."""

    name: str

    def chat(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[str]: ...


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's thinking: everything up to the last ``</think>``."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()
