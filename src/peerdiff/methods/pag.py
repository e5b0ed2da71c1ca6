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


def strip_label(text: str, label: str = "[Summary]:") -> str:
    t = strip_reasoning(text)
    i = t.lower().find(label.lower())
    return t[i + len(label) :].strip() if i >= 0 else t


def past_reviews_block(bench: Benchmark, ids: Sequence[int], pc) -> str:
    return "".join(
        prompts.past_review(bench, n + 1, bench.review(r), pc) for n, r in enumerate(ids)
    )


def retrieved(bench: Benchmark, samples: Sequence[Sample], k: int) -> list[list[int]]:
    """Each sample's ``k`` BM25-retrieved past reviews (DPL's selection)."""
    return [bm25_top(bench, s.profile, rag_query(bench, s), k) for s in samples]


def generator_conversation(
    bench: Benchmark, sample: Sample, past: Sequence[int], summary: str, pc
) -> list[Message]:
    target = bench.review(sample.target)
    user = (
        prompts.item_fields(bench, target, pc)
        + "[User's Past Reviews]:\n"
        + past_reviews_block(bench, past, pc)
        + f"[User's Profile Summary]:\n{summary}\n"
        + prompts.output_fields(target)
        + "\n"
        + prompts.CLOSING
    )
    system = prompts.system_prompt(", along with the user's past reviews and profile summary")
    return prompts.conversation(system, user)


class PAG:
    """Profile-augmented generation."""

    name = "pag"

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        assert call is not None, "PAG calls a summarizer"
        bench, pc = ctx.bench, ctx.prompt
        past = retrieved(bench, samples, self.cfg.past_reviews)
        convs = [
            prompts.conversation(
                PAG_SUMMARIZER, "[User's Past Reviews]:\n" + past_reviews_block(bench, p, pc)
            )
            for p in past
        ]
        ids = [s.sample_id for s in samples]
        raw = call("summary", "summarizer", ids, convs, self.cfg.summary_max_tokens)
        return Prompts(
            [
                generator_conversation(bench, s, p, strip_label(r), pc)
                for s, p, r in zip(samples, past, raw)
            ]
        )
