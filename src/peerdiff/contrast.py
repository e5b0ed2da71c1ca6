"""DEP's contrast stage: peers and difference vectors, vectorized over the whole dataset.

For a past review ``r`` of user ``u`` on item ``i``, the peers are the other users' reviews
of ``i`` in their *base profiles* (reviews that are never a target). With ``e`` the
L2-normalised encoder vectors and ``m(x)`` the mean base-profile vector of user ``x``::

    d_p     = || m(u) - m(user of p) ||            for each peer review p
    w       = weighting(d)                         over the peers of r
    diff(r) = sum_p w_p (e_r - e_p) = e_r - sum_p w_p e_p      (sum_p w_p = 1)

Weightings (``ContrastConfig.weighting``):

- ``reference``: ``softmax(d / sum(d))`` as in the DEP code. Since ``d / sum(d)`` sums to
  one, the logits differ by at most 1 and the weights are *almost uniform*.
- ``uniform``: ``1 / n``.
- ``distance``: ``d / sum(d)`` (more different users count more).
- ``softmax``: ``softmax(d / temperature)``.

Because peers and user means come from base profiles only, ``diff(r)`` does not depend on
the sample that shows ``r``: it is computed once per review. Each sample then gets up to
``max_slots`` slots: its most recent profile reviews (newest first) that have at least one
peer. Slot ``k``'s history vector, difference vector and prompt text all refer to the same
review.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

WEIGHTINGS = ("reference", "uniform", "distance", "softmax")


def _segment_sum(values: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(seg, weights=values, minlength=n)


def peer_weights(
    d: np.ndarray, seg: np.ndarray, n: int, scheme: str = "reference", temperature: float = 1.0
) -> np.ndarray:
    """Weights over each segment's peers (segments given by ``seg``; each sums to 1).

    Args:
        d: ``(pairs,)`` profile distances.
        seg: ``(pairs,)`` segment (query review) index of each pair, in ``0..n-1``.
    """
    if scheme not in WEIGHTINGS:
        raise ValueError(f"contrast.weighting: {scheme!r} is not one of {WEIGHTINGS}")
    counts = np.bincount(seg, minlength=n).astype(np.float64)
    if scheme == "uniform":
        return 1.0 / counts[seg]
    total = _segment_sum(d, seg, n)
    safe = np.where(total > 0, total, 1.0)
    if scheme == "distance":
        return np.where(total[seg] > 0, d / safe[seg], 1.0 / counts[seg])
    logits = d / safe[seg] if scheme == "reference" else d / temperature
    mx = np.full(n, -np.inf)
    np.maximum.at(mx, seg, logits)
    ex = np.exp(logits - mx[seg])
    return ex / _segment_sum(ex, seg, n)[seg]


def user_means(vectors: np.ndarray, user: np.ndarray, rows: np.ndarray, n_users: int) -> np.ndarray:
    """Mean vector of each user over ``rows`` (users without rows get zeros)."""
    counts = np.bincount(user[rows], minlength=n_users).astype(np.float64)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    A = sp.csr_matrix((inv[user[rows]], (user[rows], rows)), shape=(n_users, len(user)))
    return np.asarray(A @ vectors, dtype=np.float32)


def difference_vectors(
    vectors: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    is_base: np.ndarray,
    queries: np.ndarray,
    scheme: str = "reference",
    temperature: float = 1.0,
    chunk: int = 1 << 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Difference vectors of ``queries`` against their peers.

    Args:
        vectors: ``(n_reviews, dim)`` L2-normalised review vectors (a memmap is fine).
        user, item: ``(n_reviews,)`` integer codes.
        is_base: ``(n_reviews,)`` True for base-profile reviews (the peer pool).
        queries: ``(m,)`` review ids to compute ``diff`` for.

    Returns:
        ``(diff (m, dim) float32 with NaN rows where a query has no peer, n_peers (m,))``.
    """
    n = len(user)
    m = len(queries)
    dim = vectors.shape[1]
    n_users = int(user.max()) + 1 if n else 0
    base = np.flatnonzero(is_base)
    means = user_means(vectors, user, base, n_users)
    sq = np.einsum("ij,ij->i", means, means)
    # base reviews grouped by item
    by_item = base[np.argsort(item[base], kind="stable")]
    n_items = int(item.max()) + 1 if n else 0
    counts = np.bincount(item[base], minlength=n_items)
    ptr = np.r_[0, np.cumsum(counts)]
    qi = item[queries]
    cnt = counts[qi]
    pair_q = np.repeat(np.arange(m), cnt)
    within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    pair_p = by_item[np.repeat(ptr[qi], cnt) + within]
    own = user[pair_p] == user[queries][pair_q]
    pair_q, pair_p = pair_q[~own], pair_p[~own]
    n_peers = np.bincount(pair_q, minlength=m)
    # profile distances, chunked: ||a-b||^2 = |a|^2 + |b|^2 - 2 a.b
    uq = user[queries][pair_q]
    up = user[pair_p]
    d = np.empty(len(pair_q), dtype=np.float64)
    for s in range(0, len(d), chunk):
        a, b = uq[s : s + chunk], up[s : s + chunk]
        dot = np.einsum("ij,ij->i", means[a], means[b])
        d[s : s + chunk] = np.sqrt(np.maximum(sq[a] + sq[b] - 2 * dot, 0.0))
    w = peer_weights(d, pair_q, m, scheme, temperature)
    W = sp.csr_matrix((w, (pair_q, pair_p)), shape=(m, n))
    peer_mean = np.asarray(W @ vectors, dtype=np.float32)
    diff = np.asarray(vectors[queries], dtype=np.float32) - peer_mean
    diff[n_peers == 0] = np.nan
    assert diff.shape == (m, dim)
    return diff, n_peers


def select_slots(flat: np.ndarray, offsets: np.ndarray, has_peer: np.ndarray, k: int) -> np.ndarray:
    """Per sample, the up-to-``k`` newest profile reviews with a peer (newest first).

    Args:
        flat, offsets: profiles as one array (each profile oldest first) and ``(S+1,)`` offsets.
        has_peer: ``(n_reviews,)`` bool.

    Returns:
        ``(S, k)`` review ids, ``-1`` where a sample has fewer than ``k``.
    """
    S = len(offsets) - 1
    lens = np.diff(offsets)
    seg = np.repeat(np.arange(S), lens)
    pos = np.arange(len(flat)) - np.repeat(offsets[:-1], lens)
    newest_first = flat[offsets[seg] + lens[seg] - 1 - pos]
    ok = has_peer[newest_first]
    c = np.cumsum(ok)
    before = np.r_[0, c][offsets[:-1]]
    rank = c - np.repeat(before, lens) - 1
    take = ok & (rank < k)
    slots = np.full((S, k), -1, dtype=np.int64)
    slots[seg[take], rank[take]] = newest_first[take]
    return slots


@dataclass
class ContrastData:
    """Per-sample slots with their history and difference vectors.

    Attributes:
        sample_ids: ``(S,)`` in the order of the rows below.
        slots: ``(S, K)`` review ids (``-1`` = empty slot).
        review_ids: ``(m,)`` the distinct slot reviews, sorted.
        diff: ``(m, dim)`` their difference vectors.
        n_peers: ``(m,)`` their peer counts.
        vectors: ``(n_reviews, dim)`` history vectors (the embed stage's).
    """

    sample_ids: list[str]
    slots: np.ndarray
    review_ids: np.ndarray
    diff: np.ndarray
    n_peers: np.ndarray
    vectors: np.ndarray

    def __post_init__(self) -> None:
        self._row = {s: i for i, s in enumerate(self.sample_ids)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def for_sample(self, sample_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(review_ids (K,), hist (K, dim), diff (K, dim), mask (K,))``; empty slots are zeros."""
        slots = self.slots[self._row[sample_id]]
        mask = slots >= 0
        K = len(slots)
        hist = np.zeros((K, self.dim), dtype=np.float32)
        diff = np.zeros((K, self.dim), dtype=np.float32)
        if mask.any():
            hist[mask] = self.vectors[slots[mask]]
            diff[mask] = self.diff[np.searchsorted(self.review_ids, slots[mask])]
        return slots, hist, diff, mask

    def save(self, directory: str | Path) -> list[str]:
        from peerdiff.stage import atomic_path, write_json

        d = Path(directory)
        for name, arr in [
            ("slots", self.slots),
            ("review_ids", self.review_ids),
            ("diff", self.diff),
            ("n_peers", self.n_peers),
        ]:
            with atomic_path(d / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
        write_json(d / "sample_ids.json", self.sample_ids)
        return ["slots.npy", "review_ids.npy", "diff.npy", "n_peers.npy", "sample_ids.json"]

    @classmethod
    def load(cls, directory: str | Path, vectors: np.ndarray) -> ContrastData:
        from peerdiff.stage import read_json

        d = Path(directory)
        return cls(
            read_json(d / "sample_ids.json"),
            np.load(d / "slots.npy"),
            np.load(d / "review_ids.npy"),
            np.load(d / "diff.npy", mmap_mode="r"),
            np.load(d / "n_peers.npy"),
            vectors,
        )


def compute_contrast(
    vectors: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    is_base: np.ndarray,
    flat: np.ndarray,
    offsets: np.ndarray,
    sample_ids: list[str],
    max_slots: int = 8,
    scheme: str = "reference",
    temperature: float = 1.0,
) -> ContrastData:
    """Slots for every sample and difference vectors for every slot review (pure arrays)."""
    n = len(user)
    # peers of any review = base reviews of its item by other users
    base = np.flatnonzero(is_base)
    n_items = int(item.max()) + 1 if n else 0
    item_base = np.bincount(item[base], minlength=n_items)
    # the user's own base reviews of the item are not peers
    key = user.astype(np.int64) * max(n_items, 1) + item
    bkeys, bcounts = np.unique(key[base], return_counts=True)
    own = np.zeros(n, dtype=np.int64)
    if len(bkeys):
        pos = np.searchsorted(bkeys, key).clip(max=len(bkeys) - 1)
        own = np.where(bkeys[pos] == key, bcounts[pos], 0)
    has_peer = (item_base[item] - own) > 0
    slots = select_slots(flat, offsets, has_peer, max_slots)
    review_ids = np.unique(slots[slots >= 0])
    diff, n_peers = difference_vectors(
        vectors, user, item, is_base, review_ids, scheme, temperature
    )
    return ContrastData(list(sample_ids), slots, review_ids, diff, n_peers, vectors)
