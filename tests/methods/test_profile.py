"""PAG, DPL, DRP: feature parsing, representative peers, role-routed calls, stats as values."""

import numpy as np
import pytest

from peerdiff.methods.dpl import representatives
from peerdiff.methods.drp import parse_features
from peerdiff.methods.pag import strip_label


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (
            "--- [Writing Style] Definition: x. Difference Description: y. ---\n"
            "--- [Use of Humor]\nDefinition: z ---",
            ["writing style", "use of humor"],
        ),
        ("1. **Style**: formal\n2. **Emotional Tone:** warm", ["style", "emotional tone"]),
        ("**Definition**: nothing here", []),
        ("plain text without features", []),
        ("<think>[Bogus] Definition</think>--- [Pacing] Definition: fast ---", ["bogus", "pacing"]),
    ],
)
def test_parse_features(text, names):
    assert parse_features(text) == names


def test_representatives_take_one_peer_per_cluster_without_the_user():
    rng = np.random.default_rng(0)
    centers = np.eye(5)[:, :4] * 10  # 5 well separated clusters in 4-d
    own = centers[0] + rng.normal(0, 0.01, 4)
    peers = np.vstack([c + rng.normal(0, 0.01, (3, 4)) for c in centers])  # 3 per cluster
    reps = representatives(own, peers, k=4)
    assert len(reps) == 4
    clusters = sorted({r // 3 for r in reps})
    assert clusters == [1, 2, 3, 4]  # one per cluster, never the user's own cluster


def test_representatives_with_repeated_peer_texts_use_fewer_clusters():
    import warnings

    own, peers = np.zeros(4), np.vstack([np.ones((3, 4)), 2 * np.ones((3, 4))])  # 2 distinct
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning
        reps = representatives(own, peers, k=4)
    assert sorted(r // 3 for r in reps) == [0, 1]


def test_strip_label():
    assert strip_label("[Summary]: likes jazz") == "likes jazz"
    assert strip_label("<think>hmm</think>The user [Summary]: short") == "short"
    assert strip_label("no label") == "no label"


@pytest.fixture(scope="module")
def real_ctx(synthetic_bench):
    from peerdiff.config import PromptConfig
    from peerdiff.methods.base import Context
    from peerdiff.methods.prompts import approx_tokens

    b = synthetic_bench
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(len(b), 8)).astype(np.float32)
    return Context(b, PromptConfig(), approx_tokens, vectors=vec)


class FakeCall:
    """Records every call; answers '<step>:<id>'."""

    def __init__(self):
        self.calls = {}

    def __call__(self, step, role, ids, convs, max_new_tokens):
        self.calls[step] = (role, list(ids), list(convs))
        return [f"{step}:{i}" for i in ids]


def test_drp_summarizer_reads_the_validated_differences(real_ctx):
    from peerdiff.config import PipelineConfig
    from peerdiff.methods.dpl import PeerIndex
    from peerdiff.methods.drp import DRP

    cfg = PipelineConfig(n_items=2, n_peers=3, min_peers=3)
    samples = real_ctx.bench.samples("test")[:5]
    call = FakeCall()
    P = DRP(cfg).prompts(samples, real_ctx, call)
    convs = P.conversations
    assert P.stats["items_compared_mean"] > 0 and "features_kept_per_item_mean" in P.stats
    assert [call.calls[s][0] for s in ("extract", "validate", "summary")] == [
        "extractor",
        "validator",
        "summarizer",
    ]
    summaries = " ".join(c[1]["content"] for c in call.calls["summary"][2])
    assert "validate:" in summaries and "extract:" not in summaries
    # validation prompts carry the extraction they judge
    for i, conv in zip(call.calls["validate"][1], call.calls["validate"][2]):
        assert f"extract:{i}" in conv[1]["content"]
    # the generator sees the summary, never the target text
    peers = PeerIndex(real_ctx.bench)
    for s, conv in zip(samples, convs):
        text = conv[1]["content"]
        assert f"summary:{s.sample_id}" in text
        assert real_ctx.bench.texts[s.target][:60] not in text
    # compared items have >= min_peers other reviewers; each extraction shows <= K peers
    for conv in call.calls["extract"][2]:
        assert conv[1]["content"].count("[Review by the other user") <= 3
    ids = call.calls["extract"][1]
    assert all("#" in i for i in ids) and len(ids) <= 2 * len(samples)
    m = DRP(cfg)
    for s in samples:
        for r, reps in m.select(real_ctx.bench, peers, real_ctx.vectors, s):
            assert r in s.profile and len(peers.peers(r)) >= 3
            assert set(reps) <= set(peers.peers(r)) and len(reps) <= 3
            assert all(real_ctx.bench.base_mask[p] for p in reps)  # peers: base profiles only


def test_pag_and_dpl_calls(real_ctx):
    from peerdiff.config import PipelineConfig
    from peerdiff.methods.dpl import DPL
    from peerdiff.methods.pag import PAG

    samples = real_ctx.bench.samples("test")[:3]
    call = FakeCall()
    convs = PAG(PipelineConfig()).prompts(samples, real_ctx, call).conversations
    assert list(call.calls) == ["summary"] and len(convs) == 3
    call = FakeCall()
    DPL(PipelineConfig(min_peers=2)).prompts(samples, real_ctx, call)
    assert list(call.calls) == ["extract", "summary"]
    sys_prompt = call.calls["extract"][2][0][0]["content"]
    assert "[Writing Style]" in sys_prompt and "[Emotional Style]" in sys_prompt


def test_a_sample_without_an_eligible_item_gets_the_pag_summary(real_ctx):
    """No past item has enough other reviewers: DPL asks for PAG's summary, never for a
    profile of "0 items"."""
    from peerdiff.config import PipelineConfig
    from peerdiff.methods.dpl import DPL

    samples = real_ctx.bench.samples("test")[:3]
    call = FakeCall()
    P = DPL(PipelineConfig(min_peers=10_000)).prompts(samples, real_ctx, call)
    assert "extract" not in call.calls or call.calls["extract"][1] == []
    for conv in call.calls["summary"][2]:
        assert "0 items" not in conv[0]["content"]
        assert conv[0]["content"].startswith("Given the current user's past reviews")
    assert P.stats["samples_with_pag_summary"] == 3 and P.stats["samples_without_items"] == 3


def test_missing_answers_are_left_out(real_ctx):
    """A failed extraction is not summarized; a failed summary is not shown to the generator."""
    from peerdiff.config import PipelineConfig
    from peerdiff.methods.dpl import DPL

    class Failing(FakeCall):
        def __call__(self, step, role, ids, convs, max_new_tokens):
            out = super().__call__(step, role, ids, convs, max_new_tokens)
            return [
                None if (step == "extract" and i.endswith("#0")) or step == "summary" else o
                for i, o in zip(ids, out)
            ]

    samples = real_ctx.bench.samples("test")[:3]
    call = Failing()
    P = DPL(PipelineConfig(min_peers=2, n_items=2)).prompts(samples, real_ctx, call)
    for conv in call.calls["summary"][2]:
        assert "#0" not in conv[1]["content"] and "None" not in conv[1]["content"]
    for conv in P.conversations:
        assert "[User's Profile Summary]" not in conv[1]["content"]
        assert "profile summary" not in conv[0]["content"]


@pytest.mark.parametrize("name", ["pag", "dpl"])
def test_summarizer_and_generator_prompts_fit_the_budget(real_ctx, name):
    from dataclasses import replace

    from peerdiff.config import PipelineConfig
    from peerdiff.methods.dpl import DPL
    from peerdiff.methods.pag import PAG

    budget = 200
    ctx = replace(real_ctx, prompt=replace(real_ctx.prompt, max_prompt_tokens=budget))
    samples = real_ctx.bench.samples("test")[:4]
    call = FakeCall()
    cfg = PipelineConfig(min_peers=2, n_items=2, past_reviews=8)
    P = (PAG(cfg) if name == "pag" else DPL(cfg)).prompts(samples, ctx, call)
    n = ctx.count_tokens
    for conv in [*call.calls["summary"][2], *P.conversations]:
        assert n(conv[0]["content"] + conv[1]["content"]) <= budget
    full = (PAG(cfg) if name == "pag" else DPL(cfg)).prompts(samples, real_ctx, FakeCall())
    assert sum(map(len, (c[1]["content"] for c in full.conversations))) > sum(
        map(len, (c[1]["content"] for c in P.conversations))
    )  # really trimmed
