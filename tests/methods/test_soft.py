"""Soft-prompt methods: DEP's slot alignment, the tokens layout, controls and features."""

import re

import numpy as np
import pytest

from peerdiff import methods
from peerdiff.config import PromptConfig, load_config
from peerdiff.contrast import compute_contrast
from peerdiff.methods.base import Context
from peerdiff.methods.prompts import approx_tokens


@pytest.fixture(scope="module")
def ctx(synthetic_bench):
    b = synthetic_bench
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(len(b), 8)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    u, i = b.codes()
    flat, off = b.profile_arrays()
    data = compute_contrast(vec, u, i, b.base_mask, flat, off, [s.sample_id for s in b.samples()])
    inputs = {s.sample_id: vec[0] for s in b.samples()}
    return Context(b, PromptConfig(), approx_tokens, vectors=vec, inputs=inputs, contrast=data)


def user_text(m, s, ctx) -> str:
    return m.prompts([s], ctx).conversations[0][1]["content"]


@pytest.mark.parametrize("compact", [False, True])
def test_slot_text_and_vectors_refer_to_the_same_review(ctx, compact):
    cfg = load_config(None, [f"dep.compact={str(compact).lower()}", "dep.text_reviews=3"])
    m = methods.build("dep", cfg)
    b = ctx.bench
    for s in b.samples():
        text = user_text(m, s, ctx)
        slots, hist, _diff, mask = ctx.contrast.for_sample(s.sample_id)
        assert mask.sum() > 0
        for k in np.flatnonzero(mask):
            r = b.review(int(slots[k]))
            # the block holding [HIS_TOKEN_k] and [DIFF_TOKEN_k] is review r's block
            # one line per slot (compact), else one block per review
            blocks = text.split("\n") if compact else re.split(r"\n(?=- \[Review \d+\]:\n)", text)
            (block,) = [x for x in blocks if f"[HIS_TOKEN_{k}]" in x]
            assert f"[DIFF_TOKEN_{k}]" in block
            item = b.item(r.item_id).title
            if compact:
                assert block.startswith(f"- {item} ({r.rating:g}) {r.title}:")
            else:
                assert (
                    f"[Item Title]: {item}\n" in block and f"[Review Title]: {r.title}\n" in block
                )
            np.testing.assert_array_equal(hist[k], ctx.contrast.vectors[r.review_id])
            if k < 3:
                assert r.text[:40] in text
        assert b.texts[s.target][:60] not in text
        assert f"[HIS_TOKEN_{int(mask.sum())}]" not in text  # no placeholder for empty slots


def test_tokens_layout_is_the_constant_prompt_word_for_word(ctx):
    """DEP (tokens layout), dep-mean and the constant differ only in the soft vectors."""
    cfg = load_config(None, ["dep.layout=tokens"])
    ph = re.compile(r"\[(HIS|DIFF|SOFT)_TOKEN_\d+\]")
    for s in ctx.bench.samples("test"):
        texts = {
            n: user_text(methods.build(n, cfg), s, ctx) for n in ("dep", "dep-mean", "constant")
        }
        assert texts["dep"] == texts["dep-mean"]
        assert ph.sub("<t>", texts["dep"]) == ph.sub("<t>", texts["constant"])
        assert len(ph.findall(texts["dep"])) == 16  # every slot, filled or not
        assert texts["dep"].rstrip().endswith("]")  # the soft tokens close the user turn
        assert all(ctx.bench.titles[r] not in texts["dep"] for r in s.profile)


def test_dep_features_are_the_contrast_slots(ctx):
    m = methods.build("dep", load_config(None))
    samples = ctx.bench.samples("val")
    f = m.prompts(samples, ctx).features
    assert f["hist"].shape == (len(samples), 8, 8) and f["mask"].dtype == bool
    for i, s in enumerate(samples):
        _, h, d, mask = ctx.contrast.for_sample(s.sample_id)
        np.testing.assert_array_equal(f["hist"][i], h)
        np.testing.assert_array_equal(f["diff"][i], d)
        assert (f["hist"][i][~mask] == 0).all()


def test_constant_and_pplug_prompts_carry_no_user_history(ctx):
    cfg = load_config(None)
    b = ctx.bench
    s = b.samples("test")[0]
    for name, n in (("constant", 16), ("pplug", 1)):
        text = user_text(methods.build(name, cfg), s, ctx)
        assert len(re.findall(r"\[(SOFT|PERSONA)_TOKEN_\d+\]", text)) == n
        assert all(b.titles[r] not in text for r in s.profile if len(b.titles[r]) > 12)
    f = methods.build("pplug", cfg).prompts(b.samples("test")[:3], ctx).features
    assert f["hist"].shape[0] == 3 and f["mask"].any(1).all() and f["query"].shape == (3, 8)


def test_method_learning_rates_and_loss_weights():
    cfg = load_config(None, ["train.lr=1e-3", "dep.lr=3e-3", "dep.recon_weight=5"])
    assert methods.build("dep", cfg).lr() == 3e-3
    assert methods.build("dep-mean", cfg).lr() == 3e-3
    assert methods.build("constant", cfg).lr() == 1e-3
    assert methods.build("dep", cfg).loss_weights()["recon_weight"] == 5
    assert methods.build("constant", cfg).loss_weights()["recon_weight"] == 0
    c = methods.build("dep-mean", cfg).adapter_config(8, 16)
    assert c.mean_features and c.kind == "dep"


def test_dep_reference_prompt_has_deps_wording_and_no_format_line(ctx):
    from peerdiff.methods.dep import REFERENCE_SYSTEM

    cfg = load_config(
        None,
        [
            "dep.layout=text",
            "prompt.style=reference",
            "dep.max_review_chars=null",
            "prompt.max_desc_chars=null",
        ],
    )
    m = methods.build("dep", cfg)
    s = ctx.bench.samples("test")[0]
    conv = m.prompts([s], ctx).conversations[0]
    assert conv[0]["content"] == REFERENCE_SYSTEM
    assert "[Review]" not in conv[0]["content"] + conv[1]["content"]
    user = conv[1]["content"]
    assert user.rstrip().endswith(f"[Output Review Title]: {ctx.bench.review(s.target).title}")
    slots, *_ = ctx.contrast.for_sample(s.sample_id)
    newest = ctx.bench.review(int(slots[0]))
    assert newest.text.strip() in user  # the whole text, not clipped


def test_dep_text_layout_drops_the_oldest_slots_to_fit_and_masks_them(ctx):
    base = ["dep.layout=text", "dep.max_review_chars=null", "prompt.max_desc_chars=null"]
    s = ctx.bench.samples("test")[0]
    full = methods.build("dep", load_config(None, base)).prompts([s], ctx)
    n_full = int(full.features["mask"][0].sum())
    assert n_full >= 2
    whole = approx_tokens("".join(m["content"] for m in full.conversations[0]))
    tight = methods.build("dep", load_config(None, [*base, f"dep.max_prompt_tokens={whole - 5}"]))
    P = tight.prompts([s], ctx)
    text = P.conversations[0][1]["content"]
    kept = int(P.features["mask"][0].sum())
    assert 0 < kept < n_full
    assert "[HIS_TOKEN_0]" in text and f"[HIS_TOKEN_{kept - 1}]" in text  # newest kept
    assert f"[HIS_TOKEN_{kept}]" not in text  # oldest dropped, and masked
    assert approx_tokens("".join(m["content"] for m in P.conversations[0])) <= whole - 5
