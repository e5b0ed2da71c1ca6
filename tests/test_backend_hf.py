import pytest

from peerdiff.backends.base import GenParams, strip_reasoning
from peerdiff.backends.hf import HFBackend


def convs(texts):
    return [[{"role": "user", "content": t}] for t in texts]


def test_batched_left_padded_generation_matches_one_by_one(tiny_lm):
    model, tok, _ = tiny_lm
    texts = ["short", "a much longer prompt than the first one", "mid length one"]
    params = GenParams(max_new_tokens=8)
    batched = HFBackend(model, tok, batch_size=3).chat(convs(texts), params)
    single = [HFBackend(model, tok, batch_size=1).chat(convs([t]), params)[0] for t in texts]
    assert batched == single
    assert all(isinstance(x, str) for x in batched)


def test_sampling_is_seeded(tiny_lm):
    model, tok, _ = tiny_lm
    be = HFBackend(model, tok, batch_size=2)
    p = GenParams(max_new_tokens=6, do_sample=True, temperature=1.0, top_p=0.9, seed=3)
    assert be.chat(convs(["x", "y"]), p) == be.chat(convs(["x", "y"]), p)


def test_load_from_a_local_folder(tiny_lm, tmp_path):
    _, _, folder = tiny_lm
    be = HFBackend.load(str(folder), cache_dir=tmp_path, batch_size=2)
    assert all(not p.requires_grad for p in be.model.parameters())
    assert be.tokenizer.padding_side == "left"
    assert len(be.chat(convs(["hi"]), GenParams(max_new_tokens=3))) == 1


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("<think>hmm</think> answer", "answer"),
        ("no thinking", "no thinking"),
        ("a</think>b</think> c", "c"),
    ],
)
def test_strip_reasoning(raw, clean):
    assert strip_reasoning(raw) == clean
