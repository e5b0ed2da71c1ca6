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

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
        if groups and lengths[i] >= ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        elif groups and lengths[i] == 0:
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


def reserved_cache(room: int):
    """A ``DynamicCache`` whose layers write new keys/values into reserved room.

    ``DynamicCache`` concatenates each layer's whole cache with every new token (a quarter of
    the CPU time of a 96-token batched decode). Here each layer keeps a buffer with ``room``
    spare positions and returns views of its filled part; a layer that runs out of room, or
    whose rows were repeated, grows by another ``room``. Values are the same as with
    ``DynamicCache``; only the copying changes.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class _ReservedLayer(DynamicLayer):
        def _view(self) -> None:  # keys/values: the filled part of the buffers
            self.keys = self._buf[0][..., : self._n, :]
            self.values = self._buf[1][..., : self._n, :]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._buf, self._n = None, 0
            n, t = self._n, key_states.shape[-2]
            buf = self._buf
            if buf is None or n + t > buf[0].shape[-2] or buf[0].shape[0] != key_states.shape[0]:
                b, h, _, d = key_states.shape
                buf = tuple(x.new_empty(b, h, n + t + room, d) for x in (key_states, value_states))
                if n:
                    buf[0][..., :n, :] = self.keys
                    buf[1][..., :n, :] = self.values
                self._buf = buf
            buf[0][..., n : n + t, :] = key_states
            buf[1][..., n : n + t, :] = value_states
            self._n = n + t
            self._view()
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.get_seq_length() > 0:  # keep the room
                self._n = max(0, self._n + tokens_to_remove)
                self._view()
            else:
                super().crop(tokens_to_remove)

        def batch_repeat_interleave(self, repeats: int) -> None:
            super().batch_repeat_interleave(repeats)
            self._buf = None  # the next update reserves room at the new batch size

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.get_seq_length() > 0:
                self._buf = tuple(x[indices] for x in self._buf)
                self._view()

    cache = DynamicCache()
    cache.layer_class_to_replicate = _ReservedLayer
    return cache


@contextmanager
def skinny_head(model):
    """Within the block, the LM head multiplies as ``W @ h.T`` when it sees 2 to 64 rows.

    Decoding applies the head to a few rows at a time: ``(rows, hidden) x (vocab,
    hidden).T``. On CPU, MKL runs that product about 2x faster with the weight as the left
    operand (SmolLM2's 49,152 x 576 head at 8 rows: 13 ms instead of 29; at 32: 23 instead
    of 39); one row stays a matrix-vector product, which is faster as it is, and from about
    90 rows on the two are equal (the target-scoring chunks keep theirs). The model's own
    forward still runs (soft-capping and the like apply unchanged); only this module's
    product changes, so logits agree to float rounding. Heads with a bias, or that are not a
    plain ``nn.Linear``, are left alone. Not re-entrant across threads: the model has one
    owner while it decodes.
    """
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        yield
        return
    plain = head.forward

    def forward(h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[:-1].numel()
        if not 2 <= rows <= 64 or h.device.type != "cpu":
            return plain(h)
        flat = h.reshape(rows, h.shape[-1])
        return (head.weight @ flat.T).T.contiguous().reshape(*h.shape[:-1], head.out_features)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward
