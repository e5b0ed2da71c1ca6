"""The one interface every LLM call goes through, its generation parameters, and what a
call returns (:class:`Completion`: the answer, any separate reasoning, the finish reason)."""

from __future__ import annotations

import re
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


def sampling_key(params: GenParams) -> tuple:
    """What rows generated in one batch by :class:`~peerdiff.backends.hf.HFBackend` must
    share: the sampling settings (greedy rows share everything). Each row keeps its own
    token budget and repetition penalty."""
    if not params.do_sample:
        return (False,)
    return (True, params.temperature, params.top_p, params.seed)


def per_row(params: GenParams | Sequence[GenParams], n: int) -> list[GenParams]:
    """One :class:`GenParams` per prompt: ``params`` repeated, or checked to be ``n`` long."""
    if isinstance(params, GenParams):
        return [params] * n
    rows = list(params)
    if len(rows) != n:
        raise ValueError(f"{len(rows)} generation settings for {n} prompts")
    return rows


@dataclass(frozen=True)
class Completion:
    """One reply.

    Attributes:
        text: the answer (``""`` when the server sent none).
        reasoning: thinking a server returned separately (``reasoning_content``).
        finish_reason: ``stop`` (the model ended), ``length`` (cut at the token budget).
    """

    text: str
    reasoning: str = ""
    finish_reason: str = "stop"


@runtime_checkable
class ChatBackend(Protocol):
    """Generates one reply per conversation (batched internally as the backend sees fit)."""

    name: str

    def complete(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[Completion]: ...

    def chat(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[str]:
        """The replies' texts (backends that subclass this protocol inherit it)."""
        return [c.text for c in self.complete(conversations, params, desc)]


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's thinking: everything up to the last ``</think>``.

    Thinking that never closed (``<think>`` without ``</think>``) has no answer: ``""``.
    """
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1].strip()
    if "<think>" in text:
        return ""
    return text.strip()


def answer_problem(c: Completion, reasoning: bool = True) -> str | None:
    """Why a completion cannot be used as an answer, or ``None`` when it can.

    Thinking without its closing ``</think>`` or no answer (after any thinking) is a failed
    call, never text to pass on; so is an answer cut at the token budget when the model
    ``reasoning`` (its budget may have gone to thinking). A plain model's cut answer is its
    answer, as the published pipelines use it.
    """
    if reasoning and c.finish_reason == "length":
        return "cut at the token budget (finish_reason=length)"
    if "<think>" in c.text and "</think>" not in c.text:
        return "thinking never closed (<think> without </think>)"
    if not strip_reasoning(c.text):
        return "no answer" + (" after the reasoning" if c.reasoning or "</think>" in c.text else "")
    return None


def arrange(conversation: list[Message], instructions: str = "system") -> list[Message]:
    """The conversation as a backend wants it: ``user`` moves the system message to the top of
    the first user turn (DeepSeek-R1 models are used without a system prompt)."""
    if instructions != "user" or not conversation or conversation[0]["role"] != "system":
        return conversation
    system, rest = conversation[0]["content"], list(conversation[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
        return rest
    return [{"role": "user", "content": system}, *rest]


# Soft-prompt placeholders (peerdiff.model.inject) are special tokens the methods put into
# prompts on purpose; every other special token of a tokenizer is a control token.
_PLACEHOLDER = re.compile(r"\[[A-Z]+_TOKEN_\d+\]")
_ZWSP = "\u200b"


def _control_tokens(tokenizer, placeholders: bool) -> re.Pattern | None:
    """A pattern of the tokenizer's special tokens (soft-prompt placeholders excluded when
    ``placeholders`` keeps them)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    names = {t.content for t in added.values() if getattr(t, "special", False)}
    names |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    names = sorted(
        (n for n in names if len(n) > 1 and not (placeholders and _PLACEHOLDER.fullmatch(n))),
        key=len,
        reverse=True,
    )
    return re.compile("|".join(map(re.escape, names))) if names else None


def render_prompt(tokenizer, conversation: list[Message], placeholders: bool = False) -> str:
    """The prompt string a chat model sees: its chat template with the generation prompt,
    control tokens inside messages as text (:func:`plain_text`), soft-prompt placeholders
    too unless ``placeholders``."""
    return tokenizer.apply_chat_template(
        plain_text(conversation, tokenizer, placeholders),
        tokenize=False,
        add_generation_prompt=True,
    )


def encode_prompt(tokenizer, conversation: list[Message], placeholders: bool = False) -> list[int]:
    """Token ids of :func:`render_prompt`."""
    text = render_prompt(tokenizer, conversation, placeholders)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def plain_text(conversation: list[Message], tokenizer, placeholders: bool = False) -> list[Message]:
    """``conversation`` with every control-token string inside a message (``<|im_end|>``,
    ``<|im_start|>``, ``</s>``...) broken by a zero-width space, so that text from reviews or
    requests is tokenized as text and can never close a turn or open a system message.

    Args:
        placeholders: keep soft-prompt placeholders (``[HIS_TOKEN_0]``...) whole: only for a
            soft-prompt method's own prompts. Elsewhere they are text too (a chat with one
            would reach the embedding table with an id it does not have). In a soft prompt,
            the same string inside review data also gets the soft vector: the placeholder
            syntax is reserved.

    Messages without such strings are returned unchanged."""
    pat = _control_tokens(tokenizer, placeholders)
    if pat is None:
        return conversation
    out = []
    for m in conversation:
        c = m.get("content")
        if isinstance(c, str) and pat.search(c):
            c = pat.sub(lambda x: x.group(0)[0] + _ZWSP + x.group(0)[1:], c)
            m = {**m, "content": c}
        out.append(m)
    return out
