"""DEP prompts on real data: slot k's text and slot k's vectors are the same review."""

import re

import numpy as np
import pytest

from peerdiff.config import PromptConfig, load_config
from peerdiff.contrast import compute_contrast
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.prepare import prepare
from peerdiff.methods.prompts import approx_tokens
from peerdiff.methods.softprompt import SoftContext, SoftPromptMethod


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from conftest import DIGITAL_MUSIC, SHARED_DATA

    if not DIGITAL_MUSIC.exists():
        pytest.skip("bundled data missing")
    cfg = load_config(None, [f"data.root={SHARED_DATA}"])
    b = Benchmark(prepare(cfg.data, tmp_path_factory.mktemp("run")).dir)
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(len(b), 8)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    u, i = b.codes()
    flat, off = b.profile_arrays()
    data = compute_contrast(vec, u, i, b.base_mask, flat, off, [s.sample_id for s in b.samples()])
    inputs = {s.sample_id: vec[0] for s in b.samples()}
    return SoftContext(b, PromptConfig(), approx_tokens, contrast=data, inputs=inputs)


@pytest.mark.parametrize("compact", [False, True])
def test_slot_text_and_vectors_refer_to_the_same_review(ctx, compact):
    cfg = load_config(None, [f"dep.compact={str(compact).lower()}", "dep.text_reviews=3"])
    m = SoftPromptMethod("dep", cfg)
    b = ctx.bench
    for s in b.samples()[:120]:
        text = m.conversation(s, ctx)[1]["content"]
        slots, hist, diff, mask = ctx.contrast.for_sample(s.sample_id)
        assert mask.sum() > 0
        for k in np.flatnonzero(mask):
            r = b.review(int(slots[k]))
            # the block holding [HIS_TOKEN_k] and [DIFF_TOKEN_k] is review r's block
            if compact:  # one line per slot
                blocks = text.split("\n")
            else:
                blocks = re.split(r"\n(?=- \[Review \d+\]:\n)", text)
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


def test_constant_and_pplug_prompts_carry_no_user_history(ctx):
    cfg = load_config(None)
    b = ctx.bench
    s = b.samples("test")[0]
    for name, n in (("constant", 16), ("pplug", 1)):
        m = SoftPromptMethod(name, cfg)
        text = m.conversation(s, ctx)[1]["content"]
        assert len(re.findall(r"\[(SOFT|PERSONA)_TOKEN_\d+\]", text)) == n
        assert all(b.titles[r] not in text for r in s.profile if len(b.titles[r]) > 12)
    f = SoftPromptMethod("pplug", cfg).features(b.samples("test")[:3], ctx)
    assert f["hist"].shape[0] == 3 and f["mask"].any(1).all() and f["query"].shape == (3, 8)
