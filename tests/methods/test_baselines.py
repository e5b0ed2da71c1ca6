"""Non-Perso and RAG prompts, BM25 retrieval, prompt budgets."""

import pytest

from peerdiff import methods
from peerdiff.config import PromptConfig, load_config
from peerdiff.methods import Context
from peerdiff.methods.prompts import approx_tokens, clip, fit_blocks, strip_prefix
from peerdiff.methods.rag import bm25_top


@pytest.fixture(scope="module")
def bench(synthetic_bench):
    return synthetic_bench


@pytest.mark.parametrize("name", ["nonperso", "rag"])
def test_prompts_never_show_the_target_text(bench, name):
    m = methods.build(name, load_config(None))
    ctx = Context(bench, PromptConfig(), approx_tokens)
    samples = bench.samples("test")
    for s, conv in zip(samples, m.prompts(samples, ctx).conversations):
        text = " ".join(x["content"] for x in conv)
        target = bench.review(s.target)
        assert target.text[:80] not in text
        assert target.title in text and f"{target.rating:g}" in text


def test_rag_retrieves_by_bm25_from_the_profile(bench):
    s = bench.samples("test")[0]
    some = s.profile[0]
    query = f"{bench.titles[some]} {bench.item(bench.item_ids[some]).description}"
    top = bm25_top(bench, s.profile, query, 3)
    assert top[0] == some and set(top) <= set(s.profile)
    assert bm25_top(bench, [], "x", 3) == []


def test_prompt_budget_drops_past_reviews():
    blocks = ["x" * 40, "y" * 40, "z" * 40]
    assert fit_blocks("h", blocks, "t", budget=25, count=approx_tokens) == blocks[:2]
    assert fit_blocks("h", blocks, "t", budget=5, count=approx_tokens) == []


def test_clip_and_prefix():
    assert clip("one two three", 7) == "one two ..."
    assert clip("short", 10) == "short"
    assert strip_prefix("[Review]: great") == "great"
    assert strip_prefix("[review text]:  fine") == "fine"
    assert strip_prefix("plain") == "plain"


class _Docs:
    """A stand-in benchmark: review ``r``'s BM25 document is ``titles[r]`` (no description)."""

    def __init__(self, titles):
        from peerdiff.data.schema import Item

        self.titles = titles
        self.item_ids = [f"i{r}" for r in range(len(titles))]
        self._item = Item("x", "", "")

    def item(self, item_id):
        return self._item


def test_bm25_top_k_is_pinned_for_both_tokenizers():
    """Computed by hand with rank_bm25's BM25Okapi (k1 1.5, b 0.75, negative idf -> 0.25 x mean).

    dpl tokens are case-sensitive: only d0 holds "Jazz" and "piano" (score > 0); the others
    tie at 0 and the most recent wins, so the order is d0, d3, d2. words tokens lower-case
    "Jazz": "jazz" is in 3 of 4 documents (idf < 0 -> 0.25 x mean idf = 0.151), so
    d0 = 0.216 + 0.847 = 1.063, d3 (jazz x3) = 0.252, d1 (jazz x1) = 0.151, d2 = 0.
    """
    docs = _Docs(["Jazz Jazz piano", "jazz guitar solo", "Rock drums loud", "jazz jazz jazz"])
    assert bm25_top(docs, [0, 1, 2, 3], "Jazz piano", 3, "dpl") == [0, 3, 2]
    assert bm25_top(docs, [0, 1, 2, 3], "Jazz piano", 3, "words") == [0, 3, 1]
    assert bm25_top(docs, [0, 1, 2, 3], "Jazz piano", 1, "dpl") == [0]
