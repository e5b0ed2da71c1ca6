"""Forward passes of the frozen LM over prompt + target sequences.

One batching rule serves training, target likelihood and the swap probe: the first
``shared`` columns (a prefix every row has, e.g. the system prompt) come first, then each
row's left padding, then the rest of the row::

    [ shared prefix | pad pad | rest of prompt + target ]

Position ids count real tokens only, so every row sees exactly the positions it would see
alone. :func:`target_losses` runs the shared prefix once on one row and repeats its KV cache
over the batch, runs the next columns (before the first soft token) without gradients, and
applies the LM head only at target positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from peerdiff.model.inject import Injector


@dataclass
class Example:
    """One sequence: prompt ids (placeholders allowed) and target ids (with EOS if kept)."""

    prompt_ids: list[int]
    target_ids: list[int]


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all ``seqs`` share."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


def shared_prefix(
    prompts: Sequence[Sequence[int]], is_placeholder: torch.Tensor | None = None
) -> int:
    """Leading tokens every prompt shares, cut before the first placeholder (soft tokens
    differ between rows even where their placeholder ids agree)."""
    n = common_prefix(prompts) if len(prompts) > 1 else 0
    if n and is_placeholder is not None:
        head = torch.as_tensor(list(prompts[0][:n]))
        hits = torch.nonzero(is_placeholder.cpu()[head]).flatten()
        n = int(hits[0]) if len(hits) else n
    return n


def length_groups(lengths: Sequence[int], ratio: float = 0.75) -> list[list[int]]:
    """Row indices grouped by length, longest first: a row joins the current group while
    it is at least ``ratio`` of the group's longest (so padding stays under a quarter of a
    group's tokens); rows of length 0 join the last group."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if (groups and lengths[i] >= ratio * lengths[groups[-1][0]]) or (
            groups and lengths[i] == 0
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def pad_batch(
    seqs: Sequence[Sequence[int]], pad: int, shared: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``, each ``(batch, width)``: the first ``shared`` tokens of every
    row (identical in all rows) on the left, then left padding, then the rest.

    ``shared = 0`` is plain left padding (every row aligned to the right).
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        s = torch.as_tensor(list(s), dtype=torch.long)
        ids[row, :shared] = s[:shared]
        mask[row, :shared] = 1
        ids[row, width - len(s) + shared :] = s[shared:]
        mask[row, width - len(s) + shared :] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (padding repeats its neighbour's)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def collate(
    examples: Sequence[Example],
    pad_id: int,
    device: torch.device | str,
    shared: int | None = None,
    is_placeholder: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``position_ids``, ``labels`` and ``shared`` (the
    number of leading columns identical in every row, computed once for the batch).

    Args:
        shared: leading tokens to keep aligned on the left; ``None`` takes the examples'
            common prompt prefix, cut before the first placeholder (soft tokens differ
            between rows even where their placeholder ids are the same).
        is_placeholder: ``(vocab + placeholders,)`` bool table of placeholder ids.
    """
    seqs = [e.prompt_ids + e.target_ids for e in examples]
    if shared is None:
        shared = shared_prefix([e.prompt_ids for e in examples], is_placeholder)
    # every row keeps its last prompt token out of the shared part: its hidden state scores
    # the first target token (a batch of identical prompts would otherwise share all of it)
    shared = max(0, min(shared, min(len(e.prompt_ids) for e in examples) - 1))
    ids, mask = pad_batch(seqs, pad_id, shared)
    labels = torch.full_like(ids, -100)
    for i, e in enumerate(examples):
        if e.target_ids:
            labels[i, ids.shape[1] - len(e.target_ids) :] = torch.tensor(e.target_ids)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": positions(mask).to(device),
        "labels": labels.to(device),
        "shared": shared,
    }


def decoder_of(llm):
    """The transformer body of a causal LM (hidden states, no LM head)."""
    return llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model


_CACHE_KW: dict[type, str] = {}


def cache_kw(model) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` (transformers >= 5.2x)
    or ``past_key_values`` (earlier)."""
    t = type(model)
    if t not in _CACHE_KW:
        import inspect

        params = inspect.signature(model.forward).parameters
        _CACHE_KW[t] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KW[t]


def target_losses(
    llm, embeds: torch.Tensor, batch: dict, split: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy at every target position.

    Args:
        embeds: ``(batch, seq, hidden)`` input embeddings (soft tokens already placed).
        batch: from :func:`collate`; columns ``[0, batch["shared"])`` are identical in every
            row and run once.
        split: columns ``[0, split)`` hold no soft token and no target: they run without
            gradients and reach the rest as a KV cache (same values and gradients, less
            work). ``0`` runs everything after the shared prefix with gradients.

    Returns:
        ``(losses (n,), rows (n,))``: one loss per target token and the row it belongs to.
    """
    from transformers import DynamicCache

    decoder = decoder_of(llm)
    kw = cache_kw(decoder)
    mask, pos = batch["attention_mask"], batch["position_ids"]
    B = embeds.shape[0]
    shared = min(int(batch.get("shared", 0)), embeds.shape[1] - 1)
    split = max(split, shared)
    past = None
    if split > 0:
        with torch.no_grad():
            past = DynamicCache()
            if shared > 0:
                decoder(
                    inputs_embeds=embeds[:1, :shared],
                    attention_mask=mask[:1, :shared],
                    position_ids=pos[:1, :shared],
                    use_cache=True,
                    **{kw: past},
                )
                if B > 1:
                    past.batch_repeat_interleave(B)
            if split > shared:
                decoder(
                    inputs_embeds=embeds[:, shared:split],
                    attention_mask=mask[:, :split],
                    position_ids=pos[:, shared:split],
                    use_cache=True,
                    **{kw: past},
                )
    h = decoder(
        inputs_embeds=embeds[:, split:],
        attention_mask=mask,
        position_ids=pos[:, split:],
        use_cache=past is not None,
        **{kw: past},
    ).last_hidden_state
    labels = batch["labels"][:, split + 1 :]
    sel = labels != -100
    logits = llm.get_output_embeddings()(h[:, :-1][sel])
    losses = F.cross_entropy(logits.float(), labels[sel], reduction="none")
    rows = sel.nonzero()[:, 0]
    return losses, rows


def lm_loss(llm, embeds: torch.Tensor, batch: dict, split: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy over all target tokens of the batch."""
    losses, _ = target_losses(llm, embeds, batch, split)
    return losses.mean()


def grad_free_prefix(input_ids: torch.Tensor, is_placeholder: torch.Tensor) -> int:
    """Columns before the first placeholder in any row (no gradient can flow there)."""
    hit = is_placeholder[input_ids].any(0)
    return int(hit.float().argmax()) if hit.any() else 0


SoftFn = Callable[[list[int]], torch.Tensor]


@torch.inference_mode()
def target_nll(
    llm,
    pad_id: int,
    prompts: Sequence[list[int]],
    targets: Sequence[list[int]],
    *,
    soft: SoftFn | None = None,
    injector: Injector | None = None,
    batch_size: int = 8,
    desc: str = "nll",
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of target-token NLLs and number of target tokens, per sample.

    Args:
        prompts: token ids of each prompt (chat template applied).
        targets: token ids of each real review (truncated, EOS appended if it fits).
        soft: prompt indices -> ``(len(indices), n_tokens, hidden)`` soft tokens; with
            ``injector``, for prompts with placeholders.

    Returns:
        ``(sums (n,), counts (n,))``; ``sums / counts`` is the NLL per token in nats.
    """
    if (soft is None) != (injector is None):
        raise ValueError("soft and injector go together")
    n = len(prompts)
    sums = np.zeros(n, dtype=np.float64)
    counts = np.array([len(t) for t in targets], dtype=np.int64)
    device = next(llm.parameters()).device
    order = sorted(range(n), key=lambda i: -(len(prompts[i]) + len(targets[i])))
    bar = tqdm(total=n, desc=desc, unit="sample", disable=n <= batch_size)
    for start in range(0, n, batch_size):
        idx = [i for i in order[start : start + batch_size] if counts[i] > 0]
        if not idx:
            continue
        batch = collate(
            [Example(prompts[i], targets[i]) for i in idx],
            pad_id,
            device,
            is_placeholder=None if injector is None else injector.table >= 0,
        )
        ids = batch["input_ids"]
        if soft is not None:
            emb = injector(ids, soft(idx).to(device))
        else:
            emb = llm.get_input_embeddings()(ids)
        losses, rows = target_losses(llm, emb, batch)
        per_row = torch.zeros(len(idx), dtype=torch.float64, device=losses.device)
        per_row.index_add_(0, rows, losses.double())
        sums[idx] = per_row.cpu().numpy()
        bar.update(len(idx))
    bar.close()
    return sums, counts


# ----------------------------------------------------------------------------- swap probe
