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
