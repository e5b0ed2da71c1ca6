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

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

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
    counts = np.bincount(user[rows], minlength=n_users).astype(np.float32)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0).astype(np.float32)
    A = sp.csr_matrix((inv[user[rows]], (user[rows], rows)), shape=(n_users, len(user)))
    return np.asarray(A @ vectors, dtype=np.float32)  # float32 weights keep it float32


def masked_weights(
    d: np.ndarray, mask: np.ndarray, scheme: str = "reference", temperature: float = 1.0
) -> np.ndarray:
    """:func:`peer_weights` on dense blocks: ``d, mask: (..., peers)``; rows sum to 1 over
    their masked-in entries (rows without any: zeros)."""
    if scheme not in WEIGHTINGS:
        raise ValueError(f"contrast.weighting: {scheme!r} is not one of {WEIGHTINGS}")
    cnt = mask.sum(-1, keepdims=True)
    uniform = mask / np.maximum(cnt, 1)
    if scheme == "uniform":
        return uniform
    dm = np.where(mask, d, 0.0)
    tot = dm.sum(-1, keepdims=True)
    if scheme == "distance":
        return np.where(tot > 0, dm / np.where(tot > 0, tot, 1.0), uniform)
    logits = d / np.where(tot > 0, tot, 1.0) if scheme == "reference" else d / temperature
    logits = np.where(mask, logits, -np.inf)
    mx = np.max(logits, axis=-1, keepdims=True)
    ex = np.where(mask, np.exp(logits - np.where(np.isfinite(mx), mx, 0.0)), 0.0)
    return ex / np.maximum(ex.sum(-1, keepdims=True), np.finfo(ex.dtype).tiny)


_SIZES = np.unique(np.round(1.5 ** np.arange(0, 40) * np.array([[1], [4 / 3]])).astype(np.int64))


def _bucket_size(x: np.ndarray) -> np.ndarray:
    """Round sizes up to 1, 2, 3, 4, 5, 6, 8, 9, 12, 14, 18, 20, ... (about x1.2 steps): padding
    wastes little, and the number of buckets stays small."""
    return _SIZES[np.searchsorted(_SIZES, np.maximum(x, 1))]


def difference_vectors(
    vectors: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    is_base: np.ndarray,
    queries: np.ndarray,
    scheme: str = "reference",
    temperature: float = 1.0,
    out: np.ndarray | None = None,
    block_bytes: int = 64 << 20,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Difference vectors of ``queries`` against their peers.

    All queries on one item share that item's peers. Items are bucketed by their numbers of
    queries and peers (rounded up to powers of two) and each bucket runs as batched dense
    products: a Gram block of user means gives every profile distance, and one batched
    ``W @ peer vectors`` every weighted peer sum. Gathers are per review, not per
    (review, peer) pair; there is no Python loop over items, users or peers.

    Args:
        vectors: ``(n_reviews, dim)`` L2-normalised review vectors (a memmap is fine).
        user, item: ``(n_reviews,)`` integer codes.
        is_base: ``(n_reviews,)`` True for base-profile reviews (the peer pool).
        queries: ``(m,)`` review ids to compute ``diff`` for.
        out: optional ``(m, dim)`` float32 array (e.g. a memmap) to write into.
        block_bytes: bound on each batch's gathered peer vectors (memory per thread).
        threads: worker threads (default: the CPU count, at most 4).

    Returns:
        ``(diff (m, dim) float32 with NaN rows where a query has no peer, n_peers (m,))``.
    """
    m = len(queries)
    dim = vectors.shape[1]
    threads = min(os.cpu_count() or 1, 4) if threads is None else threads
    diff = np.empty((m, dim), dtype=np.float32) if out is None else out
    n_peers = np.zeros(m, dtype=np.int64)
    if m == 0:
        return diff, n_peers
    n_users = int(user.max()) + 1
    n_items = int(item.max()) + 1
    vectors = np.asarray(vectors)  # a memmap's ndarray view: plain (cheaper) fancy indexing
    base = np.flatnonzero(is_base)
    means = user_means(vectors, user, base, n_users)
    sq = np.einsum("ij,ij->i", means, means)
    # base reviews grouped by item (CSR), queries grouped by item
    by_item = base[np.argsort(item[base], kind="stable")]
    b_cnt = np.bincount(item[base], minlength=n_items)
    b_ptr = np.r_[0, np.cumsum(b_cnt)]
    q_order = np.argsort(item[queries], kind="stable")
    q_item = item[queries][q_order]
    q_cnt = np.bincount(q_item, minlength=n_items)
    q_ptr = np.r_[0, np.cumsum(q_cnt)]
    items = np.flatnonzero(q_cnt)
    no_base = items[b_cnt[items] == 0]
    for i in no_base.tolist():
        diff[q_order[q_ptr[i] : q_ptr[i + 1]]] = np.nan
    items = items[b_cnt[items] > 0]
    # buckets of items with similar (queries, peers) sizes, each a few batched products.
    # They are small: one BLAS thread per product beats a pool (its threads spin-wait, many
    # times slower on a busy machine); instead chunks run on a few Python threads
    # (numpy releases the GIL in gathers and products) and write disjoint rows of `diff`.
    qs, bs = _bucket_size(q_cnt[items]), _bucket_size(b_cnt[items])

    def run(task: tuple[int, int, np.ndarray]) -> None:
        Qm, Bm, it = task
        k = len(it)
        jq, jb = np.arange(Qm), np.arange(Bm)
        q_valid = jq[None, :] < q_cnt[it][:, None]  # (k, Qm)
        b_valid = jb[None, :] < b_cnt[it][:, None]  # (k, Bm)
        qrow = q_order[np.where(q_valid, q_ptr[it][:, None] + jq[None, :], 0)]  # in `queries`
        Q = queries[qrow]  # review ids (k, Qm)
        B = by_item[np.where(b_valid, b_ptr[it][:, None] + jb[None, :], 0)]  # (k, Bm)
        uq, ub = user[Q], user[B]
        mask = q_valid[:, :, None] & b_valid[:, None, :] & (uq[:, :, None] != ub[:, None, :])
        gram = np.matmul(means[uq], means[ub].transpose(0, 2, 1))
        d = np.sqrt(np.maximum(sq[uq][:, :, None] + sq[ub][:, None, :] - 2 * gram, 0.0))
        w = masked_weights(d, mask, scheme, temperature).astype(np.float32, copy=False)
        vb = vectors[B.ravel()].astype(np.float32, copy=False).reshape(k, Bm, dim)
        vq = vectors[Q.ravel()].astype(np.float32, copy=False).reshape(k, Qm, dim)
        block = vq - np.matmul(w, vb)  # (k, Qm, dim)
        npeer = mask.sum(-1)
        block[npeer == 0] = np.nan
        diff[qrow[q_valid]] = block[q_valid]
        n_peers[qrow[q_valid]] = npeer[q_valid]

    tasks = []
    for Qm, Bm in sorted(set(zip(qs.tolist(), bs.tolist()))):
        its = items[(qs == Qm) & (bs == Bm)]
        per = max(1, block_bytes // (Bm * dim * 4))
        tasks += [(Qm, Bm, its[c : c + per]) for c in range(0, len(its), per)]
    with threadpool_limits(1, user_api="blas"):
        if threads <= 1 or len(tasks) < 2:
            for t in tasks:
                run(t)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, tasks))
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
