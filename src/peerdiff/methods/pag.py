"""PAG (profile-augmented generation), and the pieces the profile-based family shares.

A summarizer turns the user's BM25-retrieved past reviews into a profile; the generator
writes from item + past reviews + profile. DPL and DRP (:mod:`.dpl`, :mod:`.drp`) write
the profile from peer differences instead; every intermediate call goes through ``call``
(role-routed, cached per step, so an interrupted run resumes without repeating calls).
"""

from __future__ import annotations

from collections.abc import Sequence

from peerdiff.backends.base import Message, strip_reasoning
from peerdiff.config import PipelineConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Call, Context, Prompts
from peerdiff.methods.rag import bm25_top, rag_query

PAG_SUMMARIZER = (
    "Given the current user's past reviews (item title, rating, review title and text), "
    "generate a profile summary of the current user: what they care about and how they "
    "write.\nThe summary should be formatted as follows:\n[Summary]: <summary>"
)


def strip_label(text: str | None, label: str = "[Summary]:") -> str | None:
    """The text after ``label`` (reasoning dropped); ``None`` (a missing answer) stays ``None``."""
    if text is None:
        return None
    t = strip_reasoning(text)
    i = t.lower().find(label.lower())
    return t[i + len(label) :].strip() if i >= 0 else t


def past_review_blocks(bench: Benchmark, ids: Sequence[int], pc) -> list[str]:
    return [prompts.past_review(bench, n + 1, bench.review(r), pc) for n, r in enumerate(ids)]


def past_reviews_block(bench: Benchmark, ids: Sequence[int], pc) -> str:
    return "".join(past_review_blocks(bench, ids, pc))


def summarizer_conversation(
    system: str, blocks: Sequence[str], past: list[str], ctx: Context
) -> list[Message]:
    """A summarizer's input: ``blocks`` (differences), then the past reviews that fit
    ``prompt.max_prompt_tokens`` (dropped last-first, then difference blocks too)."""
    head, mid = "\n".join(blocks), "\n[User's Past Reviews]:\n"
    if not blocks:
        head, mid = "", "[User's Past Reviews]:\n"
    budget, count = ctx.prompt.max_prompt_tokens, ctx.count_tokens
    kept = prompts.fit_blocks(system + head + mid, past, "", budget, count)
    if not kept and count(system + head + mid) > budget:  # differences alone are too long
        kept_blocks = prompts.fit_blocks(system + mid, list(blocks), "", budget, count)
        head = "\n".join(kept_blocks)
    return prompts.conversation(system, head + mid + "".join(kept))


def retrieved(
    bench: Benchmark, samples: Sequence[Sample], k: int, tokenizer: str = "dpl"
) -> list[list[int]]:
    """Each sample's ``k`` BM25-retrieved past reviews (DPL's selection)."""
    return [bm25_top(bench, s.profile, rag_query(bench, s), k, tokenizer) for s in samples]


def generator_conversation(
    ctx: Context, sample: Sample, past: Sequence[int], summary: str | None
) -> list[Message]:
    """The generator's prompt: item, past reviews (as many as fit ``prompt.max_prompt_tokens``),
    the profile summary (left out when the summarizer's answer is missing), output fields."""
    bench, pc = ctx.bench, ctx.prompt
    target = bench.review(sample.target)
    system = prompts.system_prompt(
        ", along with the user's past reviews"
        + (" and profile summary" if summary is not None else ""),
        pc,
    )
    head = prompts.item_fields(bench, target, pc) + "[User's Past Reviews]:\n"
    tail = (
        (f"[User's Profile Summary]:\n{summary}\n" if summary is not None else "")
        + prompts.output_fields(target)
        + prompts.closing(pc)
    )
    blocks = past_review_blocks(bench, past, pc)
    kept = prompts.fit_blocks(system + head, blocks, tail, pc.max_prompt_tokens, ctx.count_tokens)
    return prompts.conversation(system, head + "".join(kept) + tail)


class PAG:
    """Profile-augmented generation."""

    name = "pag"

    def __init__(self, cfg: PipelineConfig, tokenizer: str = "dpl") -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        assert call is not None, "PAG calls a summarizer"
        past = retrieved(ctx.bench, samples, self.cfg.past_reviews, self.tokenizer)
        convs = [
            summarizer_conversation(
                PAG_SUMMARIZER, [], past_review_blocks(ctx.bench, p, ctx.prompt), ctx
            )
            for p in past
        ]
        ids = [s.sample_id for s in samples]
        raw = call("summary", "summarizer", ids, convs, self.cfg.summary_max_tokens)
        return Prompts(
            [
                generator_conversation(ctx, s, p, strip_label(r))
                for s, p, r in zip(samples, past, raw)
            ]
        )
