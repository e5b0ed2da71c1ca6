"""Soft-token injection: placeholder tokens in the prompt, replaced by adapter outputs.

Placeholders are added to the tokenizer as special tokens (so each is one token), but the
LLM's embedding table is never resized: :func:`inject` looks up ordinary tokens, then puts
the soft vectors at the placeholder positions. Works with any padding side.
"""

from __future__ import annotations

import torch
from torch import nn

GROUP_NAMES = {
    "hist": "HIS_TOKEN",
    "diff": "DIFF_TOKEN",
    "persona": "PERSONA_TOKEN",
    "soft": "SOFT_TOKEN",
}


def placeholder(group: str, i: int) -> str:
    """The placeholder of soft token ``i`` of ``group``: ``[HIS_TOKEN_3]``."""
    return f"[{GROUP_NAMES[group]}_{i}]"


def placeholder_names(groups: list[str], per_group: int) -> list[str]:
    """``[HIS_TOKEN_0] .. [HIS_TOKEN_7], [DIFF_TOKEN_0] ..`` in soft-token order."""
    return [placeholder(g, i) for g in groups for i in range(per_group)]


def add_placeholders(tokenizer, names: list[str]) -> list[int]:
    """Register ``names`` as special tokens (idempotent) and return their ids in order."""
    missing = [n for n in names if n not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return tokenizer.convert_tokens_to_ids(names)


class Injector:
    """Maps placeholder token ids to soft-token indices and builds ``inputs_embeds``.

    Args:
        embedding: the frozen LLM input embedding.
        placeholder_ids: id of the placeholder for soft token ``k``, in order.
    """

    def __init__(self, embedding: nn.Embedding, placeholder_ids: list[int]) -> None:
        self.embedding = embedding
        self.vocab = embedding.weight.shape[0]
        size = max(max(placeholder_ids) + 1, self.vocab)
        table = torch.full((size,), -1, dtype=torch.long)
        table[torch.tensor(placeholder_ids)] = torch.arange(len(placeholder_ids))
        self.table = table.to(embedding.weight.device)

    def __call__(self, input_ids: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """``input_ids: (batch, seq)``, ``soft: (batch, n_tokens, hidden)`` -> ``(batch, seq, hidden)``.

        Soft vectors are cast to the embedding dtype; gradients flow into ``soft``.
        """
        slot = self.table[input_ids]  # (batch, seq), -1 for ordinary tokens
        safe_ids = torch.where(slot >= 0, torch.zeros_like(input_ids), input_ids)
        if (safe_ids >= self.vocab).any():
            raise ValueError("input ids outside the LLM vocabulary that are not placeholders")
        emb = self.embedding(safe_ids)
        idx = slot.clamp(min=0).unsqueeze(-1).expand(-1, -1, soft.shape[-1])
        gathered = torch.gather(soft.to(emb.dtype), 1, idx)
        return torch.where((slot >= 0).unsqueeze(-1), gathered, emb)
