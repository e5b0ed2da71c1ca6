"""Local transformers backend: batched generation with left padding, CPU or GPU.

Prompts are sorted by length so each batch holds similar lengths (less padding), generated
in batches, and returned in the caller's order. :meth:`HFBackend.generate_embeds` takes
``inputs_embeds`` instead of token ids; soft-prompt methods (DEP, PPlug) use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from peerdiff.backends.base import GenParams, Message
from peerdiff.model.llm import load_llm


class HFBackend:
    """Chat generation with a local (frozen) causal LM.

    Args:
        model: a causal LM (``transformers``), in eval mode.
        tokenizer: its tokenizer; padding side is forced to ``left``.
        batch_size: prompts per forward batch.
    """

    def __init__(self, model, tokenizer, batch_size: int = 8, name: str = "hf") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.name = name

    @classmethod
    def load(
        cls,
        model: str = "default",
        cache_dir: str | Path = ".cache",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        threads: int | None = None,
    ) -> HFBackend:
        m, tok = load_llm(model, cache_dir, device, dtype, threads)
        return cls(m, tok, batch_size, name=f"hf:{model}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, conversation: list[Message]) -> str:
        """The prompt string the model sees (chat template with the generation prompt)."""
        return self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )

    def encode(self, conversation: list[Message]) -> list[int]:
        return self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"]

    def chat(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[str]:
        return self.generate_ids([self.encode(c) for c in conversations], params, desc)

    def _gen_kwargs(self, params: GenParams) -> dict:
        kw = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=params.do_sample,
            repetition_penalty=params.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if params.do_sample:
            kw.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    @torch.no_grad()
    def generate_ids(
        self, prompts: Sequence[list[int]], params: GenParams, desc: str = "generate"
    ) -> list[str]:
        """Generate from token-id prompts; returns decoded continuations in input order."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        pad = self.tokenizer.pad_token_id
        bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=len(prompts) <= 1)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                p = prompts[i]
                ids[row, width - len(p) :] = torch.tensor(p)
                mask[row, width - len(p) :] = 1
            if params.do_sample:
                torch.manual_seed(params.seed + b)
            gen = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                **self._gen_kwargs(params),
            )
            for row, i in enumerate(idx):
                out[i] = self.tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
            bar.update(len(idx))
        bar.close()
        return out
