"""Prompt-based user modeling in several LLM calls: PAG, DPL and DRP.

Every call goes through :class:`peerdiff.generate.Caller` (a role -> backend map, cached
per step so an interrupted run resumes without repeating calls); the methods return the
generator's conversations, which run like any other method's.

- **PAG**: a summarizer turns the user's BM25-retrieved past reviews into a profile; the
  generator writes from item + past reviews + profile.
- **DPL** (arXiv 2503.02450): BM25 picks up to N past reviews whose item has at least
  ``min_peers`` other reviewers (peers come from base profiles only). For each, the item's
  peer reviews and the user's review are clustered with KMeans into K+1 clusters, and the
  peer review nearest each centroid of the K clusters without the user's review is taken.
  The extractor describes the user's differences (writing, emotional, semantic style); the
  summarizer turns the N descriptions plus past reviews into a profile; the generator
  writes the review.
- **DRP** (arXiv 2511.15389): DPL's inputs, an extractor asked for as many style
  dimensions as it finds (``--- [Feature] Definition: ... Difference Description: ... ---``;
  reasoning before ``</think>`` is dropped), and a reflective validation pass whose output
  is what the summarizer reads (the DRP code computed it and then used the unvalidated
  extraction).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from peerdiff.backends.base import Message, strip_reasoning
from peerdiff.config import PipelineConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Review, Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Context
from peerdiff.methods.rag import bm25_top, rag_query

Call = Callable[[str, str, Sequence[str], Sequence[list[Message]], int], list[str]]

DPL_EXTRACTOR = (
    "Given the title and description of an item, along with the current user's review and "
    "{n} other users' reviews for the same item, analyze and output the differences between "
    "the current user and other users by considering the following aspects:\n"
    "[Writing Style]: word choice and sentence structure.\n"
    "[Emotional Style]: sentiment tone (positive, negative, or neutral).\n"
    "[Semantic Style]: information density and contextual coherence.\n"
)
DRP_EXTRACTOR = (
    "You are a user behavior analyst. You are given the title and description of an item, "
    "along with the current user's review and other users' reviews of the same item. Your "
    "task is to identify stylistic and expressive differences between the current user's "
    "review and those of others, independent of content or opinion. Begin with these "
    "dimensions: [Writing Style] (lexical choices and syntactic structure), [Emotional Style] "
    "(affective tone), [Semantic Style] (information density and contextual coherence). Then "
    "identify as many additional stylistic and expressive dimensions as you can where the "
    "user's review diverges from the others. Focus on style, not on item-specific opinions. "
    "For each dimension give its name, a concise definition and how the user differs. "
    "Format your output strictly as follows:\n"
    "--- [Feature Name] Definition: ... Difference Description: ... ---\n"
    "(repeat for every dimension)"
)
DRP_VALIDATOR = (
    "You are a user behavior analyst. You are given the title and description of an item, "
    "the current user's review and other users' reviews of the same item, and a set of "
    "extracted difference descriptions comparing the current user's review with the others. "
    "Keep only the descriptions that really distinguish the current user's style and "
    "expression from the others; drop the rest. Format your output strictly as follows:\n"
    "--- [Feature Name] Definition: ... Difference Description: ... ---\n"
    "(repeat for every valid dimension)"
)
SUMMARIZER = (
    "Given titles and descriptions of {items}, along with the differences {what} between the "
    "current user's review and other users' reviews for each item, and the current user's "
    "past reviews, generate a profile summary of the current user.\n"
    "The summary should be formatted as follows:\n[Summary]: <summary>"
)
PAG_SUMMARIZER = (
    "Given the current user's past reviews (item title, rating, review title and text), "
    "generate a profile summary of the current user: what they care about and how they "
    "write.\nThe summary should be formatted as follows:\n[Summary]: <summary>"
)
_FEATURE = re.compile(r"\[([^\[\]\n]{2,60})\]\s*[:\-]?\s*(?:\n\s*)?Definition", re.I)
_BOLD = re.compile(r"\*\*([^*\n]{2,60}?)\s*(?::\s*\*\*|\*\*\s*:)")
_NOT_FEATURES = {
    "definition",
    "difference description",
    "difference",
    "summary",
    "review",
    "feature name",
    "item title",
    "item description",
}


def parse_features(text: str) -> list[str]:
    """Feature names in a DRP extraction, normalised to lower case.

    The requested format is ``[Name] Definition: ...``; small models often write
    ``**Name**: ...`` instead, which is accepted too. Format words are not features.
    """
    names = [m.group(1) for m in _FEATURE.finditer(text)]
    names += [m.group(1) for m in _BOLD.finditer(text)]
    out = [re.sub(r"\s+", " ", n).strip(" :-").lower() for n in names]
    return [n for n in out if n and n not in _NOT_FEATURES]


def strip_label(text: str, label: str = "[Summary]:") -> str:
    t = strip_reasoning(text)
    i = t.lower().find(label.lower())
    return t[i + len(label) :].strip() if i >= 0 else t


def past_reviews_block(bench: Benchmark, ids: Sequence[int], pc) -> str:
    return "".join(
        prompts.past_review(bench, n + 1, bench.review(r), pc) for n, r in enumerate(ids)
    )


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

    def conversations(
        self, samples: Sequence[Sample], ctx: Context, call: Call
    ) -> list[list[Message]]:
        bench, pc = ctx.bench, ctx.prompt
        past = [
            bm25_top(bench, s.profile, rag_query(bench, s), self.cfg.past_reviews) for s in samples
        ]
        convs = [
            prompts.conversation(
                PAG_SUMMARIZER, "[User's Past Reviews]:\n" + past_reviews_block(bench, p, pc)
            )
            for p in past
        ]
        ids = [s.sample_id for s in samples]
        raw = call("summary", "summarizer", ids, convs, self.cfg.summary_max_tokens)
        self.stats = {}
        return [
            generator_conversation(bench, s, p, strip_label(r), pc)
            for s, p, r in zip(samples, past, raw)
        ]


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
    n_clusters = min(k + 1, len(X))
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

    def __init__(self, cfg: PipelineConfig, seed: int = 42) -> None:
        self.cfg = cfg
        self.seed = seed
        self.stats: dict = {}

    def _review_block(self, title: str, r: Review, limit: int) -> str:
        return (
            f"\n[{title}]:\n- [User's Rating]: {r.rating:g}\n- [Review Title]: {r.title}\n"
            f"- [Review Text]: {prompts.clip(r.text, limit)}\n"
        )

    def extraction_input(self, bench: Benchmark, review: int, others: Sequence[int]) -> str:
        r = bench.review(review)
        item = bench.item(r.item_id)
        lim = self.cfg.max_review_chars
        return (
            f"[Item Information]:\n- [Item Title]: {item.title}\n"
            f"- [Item Description]: {prompts.clip(item.description, lim)}\n"
            + self._review_block("Review by the current user", r, lim)
            + "".join(
                self._review_block(f"Review by the other user {n + 1}", bench.review(o), lim)
                for n, o in enumerate(others)
            )
        )

    def select(self, bench: Benchmark, peers: PeerIndex, vectors: np.ndarray, s: Sample):
        """Up to N (review, representative peers) pairs for a sample."""
        cand = [r for r in s.profile if len(peers.peers(r)) >= self.cfg.min_peers]
        chosen = bm25_top(bench, cand, rag_query(bench, s), self.cfg.n_items)
        out = []
        for r in chosen:
            p = peers.peers(r)
            reps = representatives(vectors[r], vectors[p], self.cfg.n_peers, self.seed)
            out.append((r, [p[i] for i in reps]))
        return out

    def differences(self, bench, pairs_by_sample, ids, call: Call) -> list[str]:
        """Extractor outputs (reasoning stripped), one per (sample, item) id."""
        convs = []
        for pairs in pairs_by_sample:
            for r, others in pairs:
                system = self.extractor_prompt.format(n=len(others))
                convs.append(prompts.conversation(system, self.extraction_input(bench, r, others)))
        raw = call("extract", "extractor", ids, convs, self.cfg.extract_max_tokens)
        return [strip_reasoning(x) for x in raw]

    def conversations(
        self, samples: Sequence[Sample], ctx: Context, call: Call
    ) -> list[list[Message]]:
        assert ctx.vectors is not None, f"{self.name} needs the embed stage's vectors"
        bench, pc = ctx.bench, ctx.prompt
        peers = PeerIndex(bench)
        pairs = [self.select(bench, peers, ctx.vectors, s) for s in samples]
        ids = [f"{s.sample_id}#{j}" for s, ps in zip(samples, pairs) for j in range(len(ps))]
        diffs = self.differences(bench, pairs, ids, call)
        # regroup per sample
        per_sample, k = [], 0
        for ps in pairs:
            per_sample.append(diffs[k : k + len(ps)])
            k += len(ps)
        self.stats = self._stats(samples, pairs, per_sample)
        past = [
            bm25_top(bench, s.profile, rag_query(bench, s), self.cfg.past_reviews) for s in samples
        ]
        summ_convs = []
        for ps, ds, p in zip(pairs, per_sample, past):
            blocks = [
                f"[Item Title]: {bench.item(bench.item_ids[r]).title}\n"
                f"[Item Description]: {prompts.clip(bench.item(bench.item_ids[r]).description, pc.max_desc_chars)}\n"
                f"[Differences between the current user's review and the other user's reviews]:\n{d}\n"
                for (r, _), d in zip(ps, ds)
            ]
            n = len(ps)
            system = SUMMARIZER.format(
                items="an item" if n == 1 else f"{n} items", what=self.summary_what
            )
            user = (
                "\n".join(blocks) + "\n[User's Past Reviews]:\n" + past_reviews_block(bench, p, pc)
            )
            summ_convs.append(prompts.conversation(system, user))
        raw = call(
            "summary",
            "summarizer",
            [s.sample_id for s in samples],
            summ_convs,
            self.cfg.summary_max_tokens,
        )
        return [
            generator_conversation(bench, s, p, strip_label(r), pc)
            for s, p, r in zip(samples, past, raw)
        ]

    def _stats(self, samples, pairs, per_sample) -> dict:
        n = np.array([len(p) for p in pairs])
        reps = [len(o) for ps in pairs for _, o in ps]
        return {
            "items_compared_mean": round(float(n.mean()), 2) if len(n) else 0.0,
            "samples_without_items": int((n == 0).sum()),
            "peers_per_item_mean": round(float(np.mean(reps)), 2) if reps else 0.0,
        }


class DRP(DPL):
    """Difference-aware reasoning personalization: open dimensions + reflective validation."""

    name = "drp"
    extractor_prompt = DRP_EXTRACTOR
    summary_what = "along the listed stylistic dimensions"

    def differences(self, bench, pairs_by_sample, ids, call: Call) -> list[str]:
        extracted = super().differences(bench, pairs_by_sample, ids, call)
        convs = []
        k = 0
        for pairs in pairs_by_sample:
            for r, others in pairs:
                user = (
                    self.extraction_input(bench, r, others)
                    + "\n[Extracted Differences]:\n"
                    + extracted[k]
                    + "\n"
                )
                convs.append(prompts.conversation(DRP_VALIDATOR, user))
                k += 1
        raw = call("validate", "validator", ids, convs, self.cfg.validate_max_tokens)
        self.extracted = extracted
        return [strip_reasoning(x) for x in raw]

    def _stats(self, samples, pairs, per_sample) -> dict:
        st = super()._stats(samples, pairs, per_sample)
        per_user: dict[str, set] = {}
        for s, ds in zip(samples, per_sample):
            feats = per_user.setdefault(s.user_id, set())
            for d in ds:
                feats.update(parse_features(d))
        counts = np.array([len(v) for v in per_user.values()])
        extracted = [len(parse_features(d)) for d in getattr(self, "extracted", [])]
        validated = [len(parse_features(d)) for ds in per_sample for d in ds]
        st.update(
            {
                "unique_valid_features_per_user_mean": round(float(counts.mean()), 2)
                if len(counts)
                else 0.0,
                "unique_valid_features_per_user_median": float(np.median(counts))
                if len(counts)
                else 0.0,
                "features_extracted_per_item_mean": round(float(np.mean(extracted)), 2)
                if extracted
                else 0.0,
                "features_kept_per_item_mean": round(float(np.mean(validated)), 2)
                if validated
                else 0.0,
            }
        )
        return st
