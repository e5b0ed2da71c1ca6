"""Local transformers backend: batched generation with left padding, CPU or GPU.

Prompts are sorted by length so each batch holds similar lengths (less padding), generated
in batches, and returned in the caller's order. :meth:`HFBackend.generate_embeds` takes
``inputs_embeds`` instead of token ids; soft-prompt methods (DEP, PPlug) use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from peerdiff.backends.base import GenParams, Message
from peerdiff.model.inject import Injector
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

    def generate_ids(
        self, prompts: Sequence[list[int]], params: GenParams, desc: str = "generate"
    ) -> list[str]:
        """Generate from token-id prompts; returns decoded continuations in input order."""
        return self._generate(prompts, params, desc)

    def generate_soft(
        self,
        prompts: Sequence[list[int]],
        soft_fn: Callable[[list[int]], torch.Tensor],
        injector: Injector,
        params: GenParams,
        desc: str = "generate",
    ) -> list[str]:
        """Generate from prompts whose placeholder tokens get soft vectors.

        Args:
            soft_fn: prompt indices -> ``(len(indices), n_tokens, hidden)`` soft tokens.
            injector: maps placeholder ids to soft-token positions (``model.inject``).
        """

        def embeds(idx: list[int], ids: torch.Tensor) -> torch.Tensor:
            return injector(ids, soft_fn(idx).to(self.device))

        return self._generate(prompts, params, desc, embeds)

    @torch.no_grad()
    def _generate(
        self,
        prompts: Sequence[list[int]],
        params: GenParams,
        desc: str,
        embeds: Callable[[list[int], torch.Tensor], torch.Tensor] | None = None,
    ) -> list[str]:
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        pad = self.tokenizer.pad_token_id
        bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=len(prompts) <= 1)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            ids, mask = left_pad([prompts[i] for i in idx], pad)
            ids, mask = ids.to(self.device), mask.to(self.device)
            if params.do_sample:
                torch.manual_seed(params.seed + b)
            if embeds is None:
                gen = self.model.generate(
                    input_ids=ids, attention_mask=mask, **self._gen_kwargs(params)
                )
                gen = gen[:, ids.shape[1] :]
            else:
                # The prompt ids go along with the embeddings so that the repetition penalty
                # sees the prompt tokens exactly as on the token path (with embeddings alone
                # it would only see new tokens). Placeholders outside the vocabulary become
                # padding there; their vectors come from the embeddings.
                vocab = self.model.get_input_embeddings().weight.shape[0]
                plain = torch.where(ids >= vocab, torch.full_like(ids, pad), ids)
                gen = self.model.generate(
                    input_ids=plain,
                    inputs_embeds=embeds(idx, ids),
                    attention_mask=mask,
                    **self._gen_kwargs(params),
                )
                gen = gen[:, ids.shape[1] :]
            for row, i in enumerate(idx):
                out[i] = self.tokenizer.decode(gen[row], skip_special_tokens=True).strip()
            bar.update(len(idx))
        bar.close()
        return out


def left_pad(seqs: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``, each ``(batch, max_len)``, sequences aligned to the right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[row, width - len(s) :] = 1
    return ids, mask
