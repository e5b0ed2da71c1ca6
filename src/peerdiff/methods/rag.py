r"""RAG baseline: BM25 picks the user's past reviews most related to the target (as in DPL).

Documents are a past review's title plus its item's description; the query is the target's
review title plus the target item's description (DPL's ``get_selected_profile``). Tokens
(``rag.tokenizer``): ``dpl`` splits on whitespace and keeps case and punctuation, as the
published code does (``rank_bm25.BM25Okapi``, ties to the most recent review); ``words``
takes lower-case ``\w+`` runs. On the bundled data the two pick the same top-4 set for only
about a quarter of the samples, so the choice matters for comparisons with the papers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from rank_bm25 import BM25Okapi

from peerdiff.backends.base import Message
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Call, Context, Prompts

_TOKEN = re.compile(r"\w+")


def tokenize(text: str, how: str = "dpl") -> list[str]:
    r"""BM25 tokens of ``text``: ``dpl`` (whitespace, case kept) or ``words`` (lower ``\w+``)."""
    if how == "dpl":
        return text.split()
    if how == "words":
        return _TOKEN.findall(text.lower())
    raise ValueError(f"rag.tokenizer: {how!r} is not one of dpl, words")


def bm25_top(
    bench: Benchmark, profile: Sequence[int], query: str, k: int, tokenizer: str = "dpl"
) -> list[int]:
    """The ``k`` profile review ids BM25 ranks highest for ``query`` (ties: most recent first)."""
    profile = list(profile)
    if not profile:
        return []
    docs = [
        tokenize(f"{bench.titles[r]} {bench.item(bench.item_ids[r]).description}", tokenizer)
        for r in profile
    ]
    if not any(docs):
        return profile[::-1][:k]
    scores = BM25Okapi(docs).get_scores(tokenize(query, tokenizer))
    recency = np.arange(len(profile))
    order = np.lexsort((-recency, -np.asarray(scores)))
    return [profile[i] for i in order[:k]]


def rag_query(bench: Benchmark, sample: Sample) -> str:
    target = bench.review(sample.target)
    return f"{target.title} {bench.item(target.item_id).description}"


class RAG:
    name = "rag"

    def __init__(self, k: int = 4, tokenizer: str = "dpl") -> None:
        self.k = k
        self.tokenizer = tokenizer

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        return Prompts([self.conversation(s, ctx) for s in samples])

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]:
        bench, pc = ctx.bench, ctx.prompt
        target = bench.review(sample.target)
        picked = bm25_top(bench, sample.profile, rag_query(bench, sample), self.k, self.tokenizer)
        head = prompts.item_fields(bench, target, pc) + "[User's Past Reviews]:\n"
        tail = prompts.output_fields(target) + prompts.closing(pc)
        blocks = [
            prompts.past_review(bench, n + 1, bench.review(r), pc) for n, r in enumerate(picked)
        ]
        kept = prompts.fit_blocks(head, blocks, tail, pc.max_prompt_tokens, ctx.count_tokens)
        system = prompts.system_prompt(", along with the user's past reviews", pc)
        return prompts.conversation(system, head + "".join(kept) + tail)
