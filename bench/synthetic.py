"""Synthetic review graphs with the bundled data's statistics (for performance only).

Reviews per user are drawn from the bundled Digital Music distribution (mean 2.8, median 2,
max 90) and item popularity from its reviewers-per-item distribution (mean 18, median 11).
Nothing here is used to score methods.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DATA = Path(
    os.environ.get("PEERDIFF_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SOURCE = DATA / "amazon-2023-schema-digital-music" / "Digital_Music.jsonl.gz"


def empirical_counts() -> tuple[np.ndarray, np.ndarray]:
    """Reviews per user and reviewers per item of the bundled file (fallback: fitted shapes)."""
    import json

    users: dict[str, int] = {}
    items: dict[str, int] = {}
    if SOURCE.exists():
        with gzip.open(SOURCE, "rt") as f:
            for line in f:
                d = json.loads(line)
                users[d["user_id"]] = users.get(d["user_id"], 0) + 1
                items[d["parent_asin"]] = items.get(d["parent_asin"], 0) + 1
        return np.array(list(users.values())), np.array(list(items.values()))
    rng = np.random.default_rng(0)
    return 1 + rng.zipf(2.2, 2490).clip(max=90), 5 + rng.zipf(1.8, 382).clip(max=160)


def review_graph(n_reviews: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``user``, ``item`` codes and ``timestamp`` per review (unique (user, item) pairs)."""
    rng = np.random.default_rng(seed)
    per_user, per_item = empirical_counts()
    n_users = max(1, int(n_reviews / per_user.mean()))
    n_items = max(8, int(n_reviews / per_item.mean()))
    counts = rng.choice(per_user, size=n_users)
    counts = np.minimum(counts, n_items)
    user = np.repeat(np.arange(n_users), counts)[:n_reviews]
    pop = rng.choice(per_item, size=n_items).astype(np.float64)
    item = rng.choice(n_items, size=len(user), p=pop / pop.sum())
    # one review per (user, item): move repeats to other random items
    for _ in range(5):
        key = user.astype(np.int64) * n_items + item
        _, first = np.unique(key, return_index=True)
        dup = np.ones(len(key), bool)
        dup[first] = False
        if not dup.any():
            break
        item[dup] = rng.integers(0, n_items, dup.sum())
    key = user.astype(np.int64) * n_items + item
    _, first = np.unique(key, return_index=True)
    keep = np.sort(first)
    user, item = user[keep], item[keep]
    ts = rng.integers(1_000_000_000, 1_700_000_000, len(user))
    return {"user": user, "item": item, "timestamp": ts, "n_users": n_users, "n_items": n_items}


def samples_for(
    graph: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The protocol's shape on a graph: per user with >= 3 reviews, the last two are the
    validation and test targets and the rest is the base profile.

    Returns:
        ``(is_base (n,), flat profiles, offsets, sample ids)``.
    """
    user, ts = graph["user"], graph["timestamp"]
    order = np.lexsort((ts, user))
    u = user[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, len(u)])
    rank = np.arange(len(u)) - np.repeat(starts, counts)
    from_end = np.repeat(counts, counts) - 1 - rank
    eligible = np.repeat(counts >= 3, counts)
    is_base = np.ones(len(user), bool)
    is_base[order[eligible & (from_end < 2)]] = False
    flat, offsets, ids = [], [0], []
    for s, c in zip(starts[counts >= 3].tolist(), counts[counts >= 3].tolist()):
        rows = order[s : s + c]
        for name, cut in (("val", c - 2), ("test", c - 1)):
            flat.append(rows[:cut])
            offsets.append(offsets[-1] + cut)
            ids.append(f"{name}:{u[s]}")
    flat_a = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    return is_base, flat_a, np.asarray(offsets, dtype=np.int64), ids


def vectors_file(path: Path, n: int, dim: int = 384, seed: int = 0, chunk: int = 200_000) -> Path:
    """Random unit vectors written chunk by chunk into a ``.npy`` file (memory stays flat)."""
    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, chunk):
        v = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        arr[s : s + len(v)] = v
    arr.flush()
    del arr
    return path
