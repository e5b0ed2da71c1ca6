"""Target likelihood and the user-swap probe: does a method's prompt make the real review likely,
and do a soft-prompt method's tokens carry *this* user?

- :func:`peerdiff.model.lm.target_nll` (the likelihood stage's measure, beside the LM
  forward it runs): teacher-forced NLL of each sample's real review under the method's exact
  prompt. Generation metrics of a small model are noisy; this is the sensitive measure.
- :func:`swap_probe`: for each sample, the same prompt text with the user's own adapter
  features and with ``K`` other users' features. ``delta = mean(NLL with donors) - NLL
  with own`` in nats per target token; ``> 0`` with an interval excluding 0 means the soft
  tokens carry the user. A fresh adapter, the constant control and ``dep-mean`` give ~0.

Donors are other users' samples of the same split whose features fill at least as many
slots as the sample's own (DEP), so the prompt and its placeholders stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from peerdiff.model.adapters import Adapter
from peerdiff.model.inject import Injector
from peerdiff.model.lm import Example, collate, target_losses


def pick_donors(
    user_ids: Sequence[str], filled: np.ndarray, k: int, seed: int = 0
) -> list[list[int]]:
    """Up to ``k`` donor rows per row: other users (one row each, distinct users) with at
    least as many filled slots, chosen at random (seeded)."""
    rng = np.random.default_rng(seed)
    users = np.asarray(user_ids, dtype=object)
    out = []
    for i in range(len(users)):
        cand = np.flatnonzero((users != users[i]) & (filled >= filled[i]))
        rng.shuffle(cand)
        picked, seen = [], set()
        for j in cand.tolist():
            if users[j] not in seen:
                seen.add(users[j])
                picked.append(j)
                if len(picked) == k:
                    break
        out.append(picked)
    return out


@torch.inference_mode()
def swap_probe(
    llm,
    pad_id: int,
    adapter: Adapter,
    injector: Injector,
    prompts: Sequence[list[int]],
    targets: Sequence[list[int]],
    features: dict[str, np.ndarray],
    donors: Sequence[Sequence[int]],
    desc: str = "probe",
) -> tuple[np.ndarray, np.ndarray]:
    """NLL per token of each target with its own features and with each donor's.

    Per sample, one batch of ``1 + K`` rows that share the prompt text: the part before the
    first soft token runs once and its KV cache is repeated over the rows.

    Returns:
        ``(own (n,), donors (n, K))``; ``NaN`` where a sample has fewer than ``K`` donors.
    """
    from peerdiff.model.adapters import to_tensors

    device = next(llm.parameters()).device
    n = len(prompts)
    K = max((len(d) for d in donors), default=0)
    own = np.full(n, np.nan)
    other = np.full((n, K), np.nan)
    is_ph = injector.table >= 0
    for i in tqdm(range(n), desc=desc, unit="sample", disable=n <= 1):
        if not targets[i]:
            continue
        row = {k: v[i] for k, v in features.items()}
        variants = [row] + [
            adapter.swap(row, {k: v[j] for k, v in features.items()}) for j in donors[i]
        ]
        stacked = {k: np.stack([v[k] for v in variants]) for k in row}
        V = len(variants)
        ids = torch.as_tensor(prompts[i])
        hit = torch.nonzero(is_ph[ids.to(is_ph.device)]).flatten()
        first = int(hit[0]) if len(hit) else len(prompts[i])
        batch = collate([Example(prompts[i], targets[i])] * V, pad_id, device, shared=first)
        soft, _ = adapter(to_tensors(stacked, range(V), device))
        emb = injector(batch["input_ids"], soft)
        losses, rows = target_losses(llm, emb, batch, split=first)
        per_row = torch.zeros(V, dtype=torch.float64, device=losses.device)
        per_row.index_add_(0, rows, losses.double())
        nll = (per_row / len(targets[i])).cpu().numpy()
        own[i] = nll[0]
        other[i, : V - 1] = nll[1:]
    return own, other


def summarize_swap(
    own: np.ndarray, donors: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, float | int | list[float]]:
    """Delta (donors - own, nats/token) with a bootstrap 95% interval over samples, the share
    of samples where own features beat every donor, own's mean rank among ``1 + K``
    (1 = best; chance = (K + 2) / 2) and the share of (sample, donor) pairs a donor wins."""
    from peerdiff.metrics import bootstrap

    ok = np.isfinite(own) & np.isfinite(donors).any(1)
    own, donors = own[ok], donors[ok]
    if not len(own):
        return {"n": 0}
    delta = np.nanmean(donors, 1) - own
    d, lo, hi = bootstrap(lambda idx: float(delta[idx].mean()), len(delta), n_boot, seed)
    valid = np.isfinite(donors)
    rank = 1 + (np.where(valid, donors < own[:, None], False)).sum(1)
    k = int(valid.sum(1).max())
    return {
        "n": len(own),
        "donors": k,
        "own_nll": float(own.mean()),
        "donor_nll": float(np.nanmean(donors)),
        "delta": d,
        "delta_ci": [lo, hi],
        "own_best_share": float((rank == 1).mean()),
        "own_rank_mean": float(rank.mean()),
        "chance_rank": (k + 2) / 2,
        "donor_wins_share": float((donors < own[:, None])[valid].mean()),
    }
