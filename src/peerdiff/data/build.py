"""The DPL benchmark protocol on raw Parquet: filters, dedup, iterative k-core, splits.

Everything runs on integer codes in NumPy (users, items, timestamps, text hashes); the
review texts are only touched once, streaming, when the kept rows are written. Order of
operations (every threshold from :class:`peerdiff.config.Protocol`):

1. drop reviews with a short or empty text, an empty title, an item unknown to the
   metadata, or an item failing the metadata filter (description length, categories,
   rating count);
2. per user, newest first, keep the first review of each item and of each text (DPL's
   dedup; exact greedy semantics);
3. iterative k-core: items with >= ``min_item_users`` users, users with
   ``min_user_reviews..max_user_reviews`` reviews, until nothing changes;
4. per user in time order, hold out the last ``n_train_targets + 2`` reviews (train
   targets, then one validation and one test target); the earlier ones form the user's
   *base profile*;
5. iteratively keep base-profile reviews only on items with >= ``min_item_profile_users``
   base-profile users, and users with >= ``min_user_profile_reviews`` such reviews;
6. samples: a target and its profile = the user's kept reviews strictly earlier in time
   (same-timestamp reviews are excluded, so nothing at or after the target leaks in).

Peers of a past review (user u, item i) are the other users whose *base profile* contains
i; base profiles never contain a target, so no target text can reach any feature.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from peerdiff.config import Protocol
from peerdiff.data import schema

SAMPLE_SPLITS = ("train", "val", "test")


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary-encode strings: returns (codes int64, sorted unique values as object array).

    One hash pass (``dictionary_encode``), then only the dictionary is sorted and the codes
    renumbered (2x faster than ``unique`` + ``index_in`` at 1e7 rows)."""
    arr = column.combine_chunks()
    enc = arr if pa.types.is_dictionary(arr.type) else arr.dictionary_encode()
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[enc.indices.to_numpy(zero_copy_only=False)]
    return codes, enc.dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)


def _pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """One int64 per row that orders rows like the pair ``(a, b)`` and is equal exactly when
    both are (``a`` non-negative codes; ``b`` any integers, ranked when their span is too
    wide). ``None`` when no such key fits in 63 bits (then sort on both keys)."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(b.min()), int(b.max())
    if (int(a.max()) + 1) * (hi - lo + 1) >= 2**63:
        b = np.unique(b, return_inverse=True)[1].reshape(-1)
        lo, hi = 0, int(b.max())
        if (int(a.max()) + 1) * (hi + 1) >= 2**63:
            return None
    return a.astype(np.int64) * (hi - lo + 1) + (b - lo).astype(np.int64)


def _stable_order(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row order by ``(a, b)``, equal pairs in array order (one stable sort of a pair key
    where it fits, else ``lexsort``)."""
    key = _pair_key(a, b)
    if key is None:
        return np.lexsort((b, a))
    return np.argsort(key, kind="stable")


def _user_time_order(
    user: np.ndarray, ts: np.ndarray, line: np.ndarray, newest_first: bool = False
) -> np.ndarray:
    """Row order by user, then time (oldest or newest first), then file line."""
    t = -ts if newest_first else ts
    if np.all(line[1:] > line[:-1]):  # rows in file order (as read): a stable sort suffices
        return _stable_order(user, t)
    return np.lexsort((line, t, user))


def _repeats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows whose ``(a, b)`` pair occurred at an earlier row (a stable sort on an exact pair
    key, so nothing can collide)."""
    o = _stable_order(a, b)
    same = (a[o][1:] == a[o][:-1]) & (b[o][1:] == b[o][:-1])
    rep = np.zeros(len(a), dtype=bool)
    rep[o[1:][same]] = True
    return rep


def dedup_latest_first(
    user: np.ndarray, item: np.ndarray, text: np.ndarray, ts: np.ndarray, line: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """DPL's per-user dedup: newest first, keep a review if neither its item nor its text was kept.

    Returns:
        (keep mask over the inputs, #dropped as repeated item, #dropped as repeated text)
    """
    n = len(user)
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep, 0, 0
    order = _user_time_order(user, ts, line, newest_first=True)
    u, it, tx = user[order], item[order], text[order]
    # Only users with a repeated (user, item) or (user, text) key need the greedy scan.
    dup_item = _repeats(u, it)
    dup_text = _repeats(u, tx)
    if not (dup_item.any() or dup_text.any()):
        return keep, 0, 0
    dup_users = np.unique(u[dup_item | dup_text])
    rows = np.flatnonzero(np.isin(u, dup_users))
    n_item = n_text = 0
    cur, seen_items, seen_texts = -1, set(), set()
    for r, uu, ii, tt in zip(rows.tolist(), u[rows].tolist(), it[rows].tolist(), tx[rows].tolist()):
        if uu != cur:
            cur, seen_items, seen_texts = uu, set(), set()
        if ii in seen_items:
            keep[order[r]] = False
            n_item += 1
        elif tt in seen_texts:
            keep[order[r]] = False
            n_text += 1
        else:
            seen_items.add(ii)
            seen_texts.add(tt)
    return keep, n_item, n_text


def k_core(
    user: np.ndarray,
    item: np.ndarray,
    keep: np.ndarray,
    n_users: int,
    n_items: int,
    min_item_users: int,
    min_user_reviews: int,
    max_user_reviews: int,
) -> tuple[np.ndarray, int]:
    """Iterate item/user count filters to a fixed point. Returns (keep mask, iterations)."""
    idx = np.flatnonzero(keep)  # the surviving rows only, shrinking each round
    u, it = user[idx], item[idx]
    iterations = 0
    while True:
        iterations += 1
        item_users = np.bincount(it, minlength=n_items)
        user_reviews = np.bincount(u, minlength=n_users)
        ok = (
            (item_users[it] >= min_item_users)
            & (user_reviews[u] >= min_user_reviews)
            & (user_reviews[u] <= max_user_reviews)
        )
        if ok.all():
            out = np.zeros(len(keep), dtype=bool)
            out[idx] = True
            return out, iterations
        idx, u, it = idx[ok], u[ok], it[ok]


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start positions of runs of equal values in a sorted array (empty for empty input)."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"min": 0, "median": 0, "mean": 0, "max": 0}
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": round(float(values.mean()), 2),
        "max": int(values.max()),
    }


def build_benchmark(
    raw_reviews: str | Path,
    raw_items: str | Path | None,
    protocol: Protocol,
    out_dir: str | Path,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Apply the protocol to raw Parquet tables and write ``reviews``, ``items``, ``samples``.

    Returns:
        The statistics dictionary (also used for the printed summary).
    """
    out_dir = Path(out_dir)
    p = protocol
    drops: Counter = Counter()
    cols = ["user_id", "item_id", "timestamp", "line", "text_hash", "text_len", "title_len"]
    raw = pq.read_table(raw_reviews, columns=cols)
    n_raw = raw.num_rows
    user, user_ids = _encode(raw["user_id"])
    item, item_ids = _encode(raw["item_id"])
    ts = raw["timestamp"].to_numpy()
    line = raw["line"].to_numpy()
    thash = raw["text_hash"].to_numpy()
    text_len = raw["text_len"].to_numpy()
    title_len = raw["title_len"].to_numpy()
    del raw

    keep = np.ones(n_raw, dtype=bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal keep
        drops[reason] += int((keep & mask).sum())
        keep &= ~mask

    drop(text_len == 0, "empty text")
    drop(text_len < p.min_text_chars, f"text shorter than {p.min_text_chars} chars")
    drop(title_len == 0, "empty review title")

    # ---- item metadata filter
    items_tbl = None
    meta_drops: Counter = Counter()
    if raw_items is not None:
        items_tbl = pq.read_table(raw_items)
        meta_ids = np.asarray(items_tbl["item_id"].to_pylist(), dtype=object)
        desc_len = pc.utf8_length(items_tbl["description"]).to_numpy(zero_copy_only=False)
        title_ok = pc.utf8_length(items_tbl["title"]).to_numpy(zero_copy_only=False) > 0
        ok = title_ok.copy()
        meta_drops["no title"] = int((~title_ok).sum())
        if p.require_description:
            d_ok = (desc_len >= p.min_desc_chars) & (desc_len <= p.max_desc_chars)
            meta_drops[f"description not {p.min_desc_chars}..{p.max_desc_chars} chars"] = int(
                (ok & ~d_ok).sum()
            )
            ok &= d_ok
        if p.require_categories:
            c_ok = items_tbl["has_categories"].to_numpy(zero_copy_only=False)
            meta_drops["no categories"] = int((ok & ~c_ok).sum())
            ok &= c_ok
        if p.require_rating_number:
            r_ok = items_tbl["has_rating_number"].to_numpy(zero_copy_only=False)
            meta_drops["no rating_number"] = int((ok & ~r_ok).sum())
            ok &= r_ok
        # hash lookups (np.isin on object arrays sorts Python strings: 30 s per call at 1e6)
        ids = pa.array(item_ids, type=pa.string())
        known = pc.is_in(ids, value_set=pa.array(meta_ids, type=pa.string())).to_numpy(False)
        passing = pc.is_in(ids, value_set=pa.array(meta_ids[ok], type=pa.string())).to_numpy(False)
        drop(~known[item], "item unknown to the metadata")
        drop(~passing[item], "item failed the metadata filter")

    # ---- dedup (newest first) among surviving rows
    idx = np.flatnonzero(keep)
    dkeep, n_dup_item, n_dup_text = dedup_latest_first(
        user[idx], item[idx], thash[idx], ts[idx], line[idx]
    )
    keep[idx[~dkeep]] = False
    drops["repeated (user, item)"] += n_dup_item
    drops["repeated (user, text)"] += n_dup_text

    # ---- iterative k-core
    before = int(keep.sum())
    keep, kcore_iters = k_core(
        user,
        item,
        keep,
        len(user_ids),
        len(item_ids),
        p.min_item_users,
        p.min_user_reviews,
        p.max_user_reviews,
    )
    drops["k-core"] += before - int(keep.sum())

    # ---- chronological hold-out: rows sorted by user, time, file order
    idx = np.flatnonzero(keep)
    order = idx[_user_time_order(user[idx], ts[idx], line[idx])]
    u_sorted = user[order]
    starts = _group_starts(u_sorted)
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    from_end = np.repeat(counts, counts) - 1 - rank
    held = from_end < p.held_out
    too_few = np.repeat(counts <= p.held_out, counts)
    drops["user has no reviews before the held-out ones"] += int(too_few.sum())
    base = ~held & ~too_few
    held &= ~too_few

    # ---- profile filter on base profiles (iterative)
    prof_iters = 0
    it_sorted = item[order]
    user_ok = ~np.repeat(counts <= p.held_out, counts)
    while True:
        prof_iters += 1
        ipu = np.bincount(it_sorted[base], minlength=len(item_ids))
        new_base = base & (ipu[it_sorted] >= p.min_item_profile_users)
        upc = np.bincount(u_sorted[new_base], minlength=len(user_ids))
        new_user_ok = user_ok & (upc[u_sorted] >= p.min_user_profile_reviews)
        new_base &= new_user_ok
        if new_base.sum() == base.sum() and new_user_ok.sum() == user_ok.sum():
            break
        base, user_ok = new_base, new_user_ok
    dropped_base = int((~base & ~held & ~too_few).sum())
    drops["profile review on an item with too few profile reviewers"] += dropped_base
    dropped_users_rows = int((held & ~user_ok).sum())
    drops["user with too few profile reviews (held-out rows)"] += dropped_users_rows
    held &= user_ok

    # ---- optional user subsample (seeded)
    final_users = np.unique(u_sorted[held])
    if max_users is not None and len(final_users) > max_users:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(final_users, size=max_users, replace=False))
        in_sub = np.isin(u_sorted, chosen)
        drops["not in the user subsample (max_users)"] += int(((base | held) & ~in_sub).sum())
        base &= in_sub
        held &= in_sub

    final_sorted = base | held
    final_rows = order[final_sorted]  # raw row indices, sorted by user, time, file order
    # review_id = position in raw file order among kept rows (lets us stream the texts)
    raw_keep = np.zeros(n_raw, dtype=bool)
    raw_keep[final_rows] = True
    review_id_of_raw = np.full(n_raw, -1, dtype=np.int64)
    review_id_of_raw[raw_keep] = np.arange(int(raw_keep.sum()))

    # ---- samples: a user's held-out rows in time order are the train targets (j = 0, 1..),
    # then val, then test; a target's profile is the user's rows strictly before its time
    f_user = user[final_rows]
    f_ts = ts[final_rows]
    f_rid = review_id_of_raw[final_rows]
    f_held = held[final_sorted]
    n_f = len(final_rows)
    ar = np.arange(n_f)
    new_user = np.r_[True, f_user[1:] != f_user[:-1]][:n_f]
    new_time = new_user | np.r_[True, f_ts[1:] != f_ts[:-1]][:n_f]
    pos = np.flatnonzero(f_held)
    start = np.maximum.accumulate(np.where(new_user, ar, 0))[pos]  # the user's first row
    cut = np.maximum.accumulate(np.where(new_time, ar, 0))[pos]  # first row at the target's time
    h_starts = _group_starts(f_user[pos])
    j = np.arange(len(pos)) - np.repeat(h_starts, np.diff(np.r_[h_starts, len(pos)]))
    named = j < p.n_train_targets + 2
    ties_excluded = int((pos - cut)[named].sum())
    empty = named & (cut == start)
    empty_profiles = int(empty.sum())
    ok = named & ~empty
    pos, start, cut, j = pos[ok], start[ok], cut[ok], j[ok]
    split = np.where(
        j < p.n_train_targets, "train", np.where(j == p.n_train_targets, "val", "test")
    )
    uid = user_ids[f_user[pos]]
    sample_ids = [
        f"train:{u}:{k}" if k < p.n_train_targets else f"{sp}:{u}"
        for u, k, sp in zip(uid.tolist(), j.tolist(), split.tolist())
    ]
    lengths = cut - start
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    profile = pa.LargeListArray.from_arrays(
        pa.array(offsets), pa.array(f_rid[np.repeat(start, lengths) + within])
    ).cast(pa.list_(pa.int64()))
    samples = pa.table(
        {
            "sample_id": pa.array(sample_ids, pa.string()),
            "split": pa.array(split.tolist(), pa.string()),
            "user_id": pa.array(uid.tolist(), pa.string()),
            "target": pa.array(f_rid[pos], pa.int64()),
            "profile": profile,
        },
        schema=schema.SAMPLES,
    )

    # ---- write reviews (streaming the raw file once) and items
    out_dir.mkdir(parents=True, exist_ok=True)
    kept_items = np.unique(item[final_rows])
    n_reviews = _write_reviews(raw_reviews, raw_keep, out_dir / "reviews.parquet")
    items = _items_table(items_tbl, item_ids[kept_items])
    pq.write_table(items, out_dir / "items.parquet", compression="zstd")
    pq.write_table(samples, out_dir / "samples.parquet", compression="zstd")

    # ---- statistics
    base_items = item[order[base]]
    ipu = np.bincount(base_items, minlength=len(item_ids))
    peers = ipu[base_items] - 1  # other users whose base profile has the item
    split_counts = Counter(split.tolist())
    prof_len = lengths.astype(np.int64)
    return {
        "input_rows": n_raw,
        "users": int(len(np.unique(f_user))),
        "items": int(len(kept_items)),
        "reviews": int(n_reviews),
        "samples": {s: int(split_counts.get(s, 0)) for s in SAMPLE_SPLITS},
        "profile_length": _stats(prof_len),
        "peers_per_profile_review": {
            **_stats(peers),
            "share_with_peer": round(float((peers > 0).mean()) if len(peers) else 0.0, 4),
        },
        "dropped_reviews": {k: v for k, v in drops.items() if v},
        "dropped_items_by_metadata": {k: v for k, v in meta_drops.items() if v},
        "k_core_iterations": kcore_iters,
        "profile_filter_iterations": prof_iters,
        "profile_reviews_excluded_same_timestamp": int(ties_excluded),
        "samples_dropped_empty_profile": int(empty_profiles),
        "protocol": p.__dict__,
    }


def _write_reviews(raw_path: str | Path, raw_keep: np.ndarray, out: Path, groups: int = 8) -> int:
    """Stream the kept raw rows (with their texts) into ``out``, numbered in file order.

    ``groups`` row groups are read at a time (decoded on every core) while the previous
    chunk is compressed and written on a second thread: 2x a batch-by-batch loop at 1e7."""
    from concurrent.futures import ThreadPoolExecutor

    pf = pq.ParquetFile(raw_path)
    md = pf.metadata
    cols = ["user_id", "item_id", "rating", "title", "text", "timestamp"]
    sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    next_id = 0
    pending = None
    with (
        ThreadPoolExecutor(1, thread_name_prefix="peerdiff-write") as pool,
        pq.ParquetWriter(out, schema.REVIEWS, compression="zstd") as w,
    ):
        for g in range(0, md.num_row_groups, groups):
            gs = list(range(g, min(g + groups, md.num_row_groups)))
            m = raw_keep[starts[gs[0]] : starts[gs[-1] + 1]]
            if not m.any():
                continue
            t = pf.read_row_groups(gs, columns=cols).filter(pa.array(m))
            ids = pa.array(np.arange(next_id, next_id + t.num_rows, dtype=np.int64))
            next_id += t.num_rows
            t = t.add_column(0, "review_id", ids).cast(schema.REVIEWS)
            if pending is not None:
                pending.result()
            pending = pool.submit(w.write_table, t)
        if pending is not None:
            pending.result()
    return next_id


def _items_table(items_tbl: pa.Table | None, ids: np.ndarray) -> pa.Table:
    ids_list = [str(x) for x in ids]
    if items_tbl is None:
        return pa.Table.from_pydict(
            {
                "item_id": ids_list,
                "title": [""] * len(ids_list),
                "description": [""] * len(ids_list),
            },
            schema=schema.ITEMS,
        )
    mask = pc.is_in(items_tbl["item_id"], value_set=pa.array(ids_list, type=pa.string()))
    t = items_tbl.filter(mask).select(["item_id", "title", "description"])
    return t.sort_by("item_id").cast(schema.ITEMS)
