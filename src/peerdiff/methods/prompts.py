"""Prompt pieces shared by every method (the papers' bracketed field layout).

All methods show the target item and the output rating/title the same way, so the only
difference between methods is the personal context they add. Texts are clipped to the
character limits of :class:`peerdiff.config.PromptConfig`, and past reviews are dropped
(least relevant first) until the prompt fits ``max_prompt_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from peerdiff.backends.base import Message
from peerdiff.config import PromptConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Review

TASK = (
    "Given the title and description of an item{extra}, and the output review rating and "
    "review title, generate a personalized item review for the user."
)
# style "reference": the papers' output format, in the system prompt
REVIEW_FORMAT = "The review should be formatted as follows:\n[Review]: <review>"
# style "small-model": a closing instruction that keeps a 135M model on task
CLOSING = (
    "Now write the review text (a few sentences, first person). Do not repeat the fields above."
)


def clip(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters at a word boundary, with an ellipsis when cut
    (``None``: the whole text)."""
    text = text.strip()
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit]
    if not text[limit].isspace():  # cut inside a word: drop the partial word
        cut = cut.rsplit(" ", 1)[0] or cut
    return cut.rstrip() + " ..."


def system_prompt(extra: str = "", pc: PromptConfig | None = None) -> str:
    """The generator's task; with the ``reference`` style, the papers' output format too."""
    task = TASK.format(extra=extra)
    return task if pc is not None and pc.style == "small-model" else task + "\n" + REVIEW_FORMAT


def closing(pc: PromptConfig) -> str:
    """What ends the generator's user turn: ``\n`` + the closing instruction (small-model
    style), or nothing (the reference prompt ends with the output fields)."""
    return "\n" + CLOSING if pc.style == "small-model" else ""


def item_fields(bench: Benchmark, review: Review, pc: PromptConfig) -> str:
    item = bench.item(review.item_id)
    return (
        f"[Item Title]: {item.title}\n"
        f"[Item Description]: {clip(item.description, pc.max_desc_chars)}\n"
    )


def output_fields(review: Review) -> str:
    return f"[Output Review Rating]: {review.rating:g}\n[Output Review Title]: {review.title}\n"


def past_review(bench: Benchmark, n: int, review: Review, pc: PromptConfig, extra: str = "") -> str:
    """One past review as a bulleted block; ``extra`` lines (e.g. soft tokens) go last."""
    item = bench.item(review.item_id)
    desc = (
        f"  - [Item Description]: {clip(item.description, pc.max_desc_chars)}\n"
        if pc.past_descriptions
        else ""
    )
    return (
        f"- [Review {n}]:\n"
        f"  - [Item Title]: {item.title}\n" + desc + f"  - [Review Rating]: {review.rating:g}\n"
        f"  - [Review Title]: {review.title}\n"
        f"  - [Review Text]: {clip(review.text, pc.max_review_chars)}\n"
        f"{extra}"
    )


def fit_blocks(
    head: str,
    blocks: Sequence[str],
    tail: str,
    budget: int,
    count: Callable[[str], int],
) -> list[str]:
    """Keep the longest prefix of ``blocks`` (most relevant first) that fits ``budget`` tokens."""
    base = count(head + tail)
    kept: list[str] = []
    used = base
    for b in blocks:
        c = count(b)
        if used + c > budget:
            break
        kept.append(b)
        used += c
    return kept


def approx_tokens(text: str) -> int:
    """Token estimate for backends without a tokenizer (~4 characters per token)."""
    return len(text) // 4 + 1


def conversation(system: str, user: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def strip_prefix(text: str, prefixes: Sequence[str] = ("[Review]:", "[Review Text]:")) -> str:
    """Remove a leading ``[Review]:``-style label (tolerant of case and spacing)."""
    t = text.strip()
    low = t.lower()
    for p in prefixes:
        pl = p.lower()
        if low.startswith(pl):
            return t[len(p) :].strip()
        if low.startswith(pl.replace(" ", "")):
            return t[len(p.replace(" ", "")) :].strip()
    return t
