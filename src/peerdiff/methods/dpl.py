"""DPL (arXiv 2503.02450): the user's differences from representative peers, as a profile.

BM25 picks up to N past reviews whose item has at least ``min_peers`` other reviewers (peers
come from base profiles only). For each, the item's peer reviews and the user's review are
clustered with KMeans into K+1 clusters, and the peer review nearest each centroid of the K
clusters without the user's review is taken. The extractor describes the user's differences
(writing, emotional, semantic style); the summarizer turns the N descriptions plus past
reviews into a profile; the generator writes the review.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from peerdiff.backends.base import Message, strip_reasoning
from peerdiff.config import PipelineConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Review, Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Call, Context, Prompts
from peerdiff.methods.pag import (
    PAG_SUMMARIZER,
    generator_conversation,
    past_review_blocks,
    retrieved,
    strip_label,
    summarizer_conversation,
)
from peerdiff.methods.rag import bm25_top, rag_query

DPL_EXTRACTOR = (
    "Given the title and description of an item, along with the current user's review and "
    "{n} other users' reviews for the same item, analyze and output the differences between "
    "the current user and other users by considering the following aspects:\n"
    "[Writing Style]: word choice and sentence structure.\n"
    "[Emotional Style]: sentiment tone (positive, negative, or neutral).\n"
    "[Semantic Style]: information density and contextual coherence.\n"
)
SUMMARIZER = (
    "Given titles and descriptions of {items}, along with the differences {what} between the "
    "current user's review and other users' reviews for each item, and the current user's "
    "past reviews, generate a profile summary of the current user.\n"
    "The summary should be formatted as follows:\n[Summary]: <summary>"
)

Pairs = list[tuple[int, list[int]]]  # (the user's review, its representative peers)


class PeerIndex:
    """Base-profile reviews grouped by item: the peers of any review."""

    def __init__(self, bench: Benchmark) -> None:
        self.bench = bench
        base = np.flatnonzero(bench.base_mask)
        self.by_item: dict[str, list[int]] = {}
        for r in base.tolist():
            self.by_item.setdefault(bench.item_ids[r], []).append(r)

    def peers(self, review: int) -> list[int]:
        """Other users' base-profile reviews of the same item."""
        user = self.bench.user_ids[review]
        return [
            p
            for p in self.by_item.get(self.bench.item_ids[review], [])
            if self.bench.user_ids[p] != user
        ]


def representatives(own: np.ndarray, peers: np.ndarray, k: int, seed: int = 42) -> list[int]:
    """DPL's peer choice: KMeans with ``k + 1`` clusters over the user's and the peers'
    vectors; in each cluster without the user's review, the peer nearest the centroid.

    Returns:
        Indices into ``peers`` (at most ``k``, in cluster order).
    """
    from sklearn.cluster import KMeans

    X = np.vstack([own[None], peers]).astype(np.float64)
    # duplicate vectors (repeated texts) cannot fill more clusters than distinct points
    n_clusters = min(k + 1, len(np.unique(X, axis=0)))
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit(X)
    labels = km.labels_
    out = []
    for c in range(n_clusters):
        if c == labels[0]:
            continue
        members = np.flatnonzero(labels[1:] == c)
        if len(members):
            d = np.linalg.norm(peers[members] - km.cluster_centers_[c], axis=1)
            out.append(int(members[np.argmin(d)]))
    return out


class DPL:
    """Difference-aware personalization learning (prompt-based)."""

    name = "dpl"
    extractor_prompt = DPL_EXTRACTOR
    summary_what = "in writing style, emotional style, and semantic style"

    def __init__(self, cfg: PipelineConfig, tokenizer: str = "dpl", seed: int = 42) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.seed = seed

    def _review_block(self, title: str, r: Review, limit: int) -> str:
        return (
            f"\n[{title}]:\n- [User's Rating]: {r.rating:g}\n- [Review Title]: {r.title}\n"
            f"- [Review Text]: {prompts.clip(r.text, limit)}\n"
        )

    def extraction_input(
        self, bench: Benchmark, review: int, others: Sequence[int], desc_chars: int | None
    ) -> str:
        r = bench.review(review)
        item = bench.item(r.item_id)
        lim = self.cfg.max_review_chars
        return (
            f"[Item Information]:\n- [Item Title]: {item.title}\n"
            f"- [Item Description]: {prompts.clip(item.description, desc_chars)}\n"
            + self._review_block("Review by the current user", r, lim)
            + "".join(
                self._review_block(f"Review by the other user {n + 1}", bench.review(o), lim)
                for n, o in enumerate(others)
            )
        )

    def select(self, bench: Benchmark, peers: PeerIndex, vectors: np.ndarray, s: Sample) -> Pairs:
        """Up to N (review, representative peers) pairs for a sample."""
        cand = [r for r in s.profile if len(peers.peers(r)) >= self.cfg.min_peers]
        chosen = bm25_top(bench, cand, rag_query(bench, s), self.cfg.n_items, self.tokenizer)
        out = []
        for r in chosen:
            p = peers.peers(r)
            reps = representatives(vectors[r], vectors[p], self.cfg.n_peers, self.seed)
            out.append((r, [p[i] for i in reps]))
        return out

    def differences(
        self, ctx: Context, pairs: list[Pairs], ids: list[str], call: Call
    ) -> tuple[list[str | None], dict]:
        """Difference descriptions, one per (sample, item) id (``None``: a failed call), and
        stats."""
        convs: list[list[Message]] = []
        for sample_pairs in pairs:
            for r, others in sample_pairs:
                system = self.extractor_prompt.format(n=len(others))
                user = self.extraction_input(ctx.bench, r, others, ctx.prompt.max_desc_chars)
                convs.append(prompts.conversation(system, user))
        raw = call("extract", "extractor", ids, convs, self.cfg.extract_max_tokens)
        return [None if x is None else strip_reasoning(x) for x in raw], {}

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        assert call is not None, f"{self.name} calls an extractor and a summarizer"
        assert ctx.vectors is not None, f"{self.name} needs the embed stage's vectors"
        bench, pc = ctx.bench, ctx.prompt
        peers = PeerIndex(bench)
        pairs = [self.select(bench, peers, ctx.vectors, s) for s in samples]
        ids = [f"{s.sample_id}#{j}" for s, ps in zip(samples, pairs) for j in range(len(ps))]
        diffs, stats = self.differences(ctx, pairs, ids, call)
        per_sample, k = [], 0  # regroup per sample
        for ps in pairs:
            per_sample.append(diffs[k : k + len(ps)])
            k += len(ps)
        past = retrieved(bench, samples, self.cfg.past_reviews, self.tokenizer)
        summ_convs, fallback = [], 0
        for ps, ds, p in zip(pairs, per_sample, past):
            blocks = [
                f"[Item Title]: {bench.item(bench.item_ids[r]).title}\n"
                f"[Item Description]: {prompts.clip(bench.item(bench.item_ids[r]).description, pc.max_desc_chars)}\n"
                f"[Differences between the current user's review and the other user's reviews]:\n{d}\n"
                for (r, _), d in zip(ps, ds)
                if d is not None  # a failed call is left out, never passed on
            ]
            n = len(blocks)
            if n:
                items = "an item" if n == 1 else f"{n} items"
                system = SUMMARIZER.format(items=items, what=self.summary_what)
            else:  # no item to compare (or no description came back): PAG's summary
                system, fallback = PAG_SUMMARIZER, fallback + 1
            summ_convs.append(
                summarizer_conversation(system, blocks, past_review_blocks(bench, p, pc), ctx)
            )
        raw = call(
            "summary",
            "summarizer",
            [s.sample_id for s in samples],
            summ_convs,
            self.cfg.summary_max_tokens,
        )
        convs = [
            generator_conversation(ctx, s, p, strip_label(r)) for s, p, r in zip(samples, past, raw)
        ]
        stats = {
            **self._stats(pairs),
            "samples_with_pag_summary": fallback,
            **stats,
            **self.feature_stats(samples, per_sample),
        }
        return Prompts(convs, stats=stats)

    def _stats(self, pairs: list[Pairs]) -> dict:
        n = np.array([len(p) for p in pairs])
        reps = [len(o) for ps in pairs for _, o in ps]
        return {
            "items_compared_mean": round(float(n.mean()), 2) if len(n) else 0.0,
            "samples_without_items": int((n == 0).sum()),
            "peers_per_item_mean": round(float(np.mean(reps)), 2) if reps else 0.0,
        }

    def feature_stats(self, samples: Sequence[Sample], per_sample: list[list[str | None]]) -> dict:
        return {}
