"""vLLM engine: the prompt-embeds builder everywhere; generation only with vLLM and CUDA."""

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


@pytest.mark.skipif(
    not (is_vllm_available() and torch.cuda.is_available()), reason="needs vLLM and CUDA"
)
def test_vllm_generates_from_prompt_embeds(tiny_lm, tmp_path):  # pragma: no cover - GPU only
    from peerdiff.backends.base import GenParams
    from peerdiff.backends.vllm import VLLMBackend

    model, tok, folder = tiny_lm
    be = VLLMBackend(str(folder), gpu_memory_utilization=0.2, max_model_len=512)
    out = be.chat([[{"role": "user", "content": "hi"}]], GenParams(max_new_tokens=4))
    assert len(out) == 1
    ids = add_placeholders(be.tokenizer, ["[SOFT_TOKEN_0]"])
    inj = Injector(model.get_input_embeddings(), ids)
    p = be.encode([{"role": "user", "content": "hi"}])
    soft = model.get_input_embeddings().weight[[p[0]]].unsqueeze(0)
    got = be.generate_soft([[ids[0], *p[1:]]], lambda idx: soft, inj, GenParams(max_new_tokens=4))
    assert got == be.generate_ids([p], GenParams(max_new_tokens=4))
