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
from dataclasses import dataclass, field
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


@dataclass
class _Rows:
    """The raw review columns the protocol reads (codes for users and items), the rows still
    kept, and how many each filter dropped."""

    user: np.ndarray
    user_ids: np.ndarray
    item: np.ndarray
    item_ids: np.ndarray
    ts: np.ndarray
    line: np.ndarray
    thash: np.ndarray
    text_len: np.ndarray
    title_len: np.ndarray
    keep: np.ndarray
    drops: Counter = field(default_factory=Counter)

    @classmethod
    def read(cls, raw_reviews: str | Path) -> _Rows:
        cols = ["user_id", "item_id", "timestamp", "line", "text_hash", "text_len", "title_len"]
        raw = pq.read_table(raw_reviews, columns=cols)
        user, user_ids = _encode(raw["user_id"])
        item, item_ids = _encode(raw["item_id"])
        return cls(
            user,
            user_ids,
            item,
            item_ids,
            raw["timestamp"].to_numpy(),
            raw["line"].to_numpy(),
            raw["text_hash"].to_numpy(),
            raw["text_len"].to_numpy(),
            raw["title_len"].to_numpy(),
            np.ones(raw.num_rows, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.keep)

    def drop(self, mask: np.ndarray, reason: str) -> None:
        """Drop the kept rows in ``mask``, counted under ``reason``."""
        self.drops[reason] += int((self.keep & mask).sum())
        self.keep &= ~mask


@dataclass
class _HeldOut:
    """Kept rows sorted by user, time and file order (``order``: raw row indices), each
    marked as a base-profile row or a held-out row (a target)."""

    order: np.ndarray
    u_sorted: np.ndarray
    counts: np.ndarray  # rows per user, in sorted order
    base: np.ndarray
    held: np.ndarray
    too_few: np.ndarray


def build_benchmark(
    raw_reviews: str | Path,
    raw_items: str | Path | None,
    protocol: Protocol,
    out_dir: str | Path,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Apply the protocol to raw Parquet tables and write ``reviews``, ``items``, ``samples``.

    The steps, in order: text filters; the item-metadata filter; duplicates (newest kept);
    the iterative k-core; the chronological hold-out; the iterative profile filter; the
    seeded user subsample; samples with their profiles; the output tables.

    Returns:
        The statistics dictionary (also used for the printed summary).
    """
    out_dir, p = Path(out_dir), protocol
    rows = _Rows.read(raw_reviews)
    rows.drop(rows.text_len == 0, "empty text")
    rows.drop(rows.text_len < p.min_text_chars, f"text shorter than {p.min_text_chars} chars")
    rows.drop(rows.title_len == 0, "empty review title")
    items_tbl, meta_drops = _filter_by_metadata(rows, raw_items, p)
    _dedup(rows)
    kcore_iters = _k_core(rows, p)
    h = _hold_out(rows, p)
    prof_iters = _profile_filter(rows, h, p)
    _subsample_users(rows, h, max_users, seed)

    final_sorted = h.base | h.held
    final_rows = h.order[final_sorted]  # raw row indices, sorted by user, time, file order
    # review_id = position in raw file order among kept rows (lets us stream the texts)
    raw_keep = np.zeros(len(rows), dtype=bool)
    raw_keep[final_rows] = True
    review_id_of_raw = np.full(len(rows), -1, dtype=np.int64)
    review_id_of_raw[raw_keep] = np.arange(int(raw_keep.sum()))
    samples, split, lengths, ties_excluded, empty_profiles = _samples(
        rows, h, final_rows, final_sorted, review_id_of_raw, p
    )

    out_dir.mkdir(parents=True, exist_ok=True)  # reviews stream the raw file once
    kept_items = np.unique(rows.item[final_rows])
    n_reviews = _write_reviews(raw_reviews, raw_keep, out_dir / "reviews.parquet")
    items = _items_table(items_tbl, rows.item_ids[kept_items])
    pq.write_table(items, out_dir / "items.parquet", compression="zstd")
    pq.write_table(samples, out_dir / "samples.parquet", compression="zstd")

    base_items = rows.item[h.order[h.base]]
    ipu = np.bincount(base_items, minlength=len(rows.item_ids))
    peers = ipu[base_items] - 1  # other users whose base profile has the item
    split_counts = Counter(split.tolist())
    return {
        "input_rows": len(rows),
        "users": len(np.unique(rows.user[final_rows])),
        "items": len(kept_items),
        "reviews": int(n_reviews),
        "samples": {s: int(split_counts.get(s, 0)) for s in SAMPLE_SPLITS},
        "profile_length": _stats(lengths.astype(np.int64)),
        "peers_per_profile_review": {
            **_stats(peers),
            "share_with_peer": round(float((peers > 0).mean()) if len(peers) else 0.0, 4),
        },
        "dropped_reviews": {k: v for k, v in rows.drops.items() if v},
        "dropped_items_by_metadata": {k: v for k, v in meta_drops.items() if v},
        "k_core_iterations": kcore_iters,
        "profile_filter_iterations": prof_iters,
        "profile_reviews_excluded_same_timestamp": int(ties_excluded),
        "samples_dropped_empty_profile": int(empty_profiles),
        "protocol": p.__dict__,
    }


def _filter_by_metadata(
    rows: _Rows, raw_items: str | Path | None, p: Protocol
) -> tuple[pa.Table | None, Counter]:
    """Drop reviews of items without metadata or whose metadata fails the protocol (title,
    description length, categories, rating count); the items table and its drop counts."""
    meta_drops: Counter = Counter()
    if raw_items is None:
        return None, meta_drops
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
    # hash lookups (np.isin on object arrays sorts Python strings, slow at a million ids)
    ids = pa.array(rows.item_ids, type=pa.string())
    known = pc.is_in(ids, value_set=pa.array(meta_ids, type=pa.string())).to_numpy(False)
    passing = pc.is_in(ids, value_set=pa.array(meta_ids[ok], type=pa.string())).to_numpy(False)
    rows.drop(~known[rows.item], "item unknown to the metadata")
    rows.drop(~passing[rows.item], "item failed the metadata filter")
    return items_tbl, meta_drops


def _dedup(rows: _Rows) -> None:
    """Repeated (user, item) and (user, text) among the kept rows: the newest stays."""
    idx = np.flatnonzero(rows.keep)
    dkeep, n_dup_item, n_dup_text = dedup_latest_first(
        rows.user[idx], rows.item[idx], rows.thash[idx], rows.ts[idx], rows.line[idx]
    )
    rows.keep[idx[~dkeep]] = False
    rows.drops["repeated (user, item)"] += n_dup_item
    rows.drops["repeated (user, text)"] += n_dup_text


def _k_core(rows: _Rows, p: Protocol) -> int:
    """The iterative k-core on the kept rows; its iteration count."""
    before = int(rows.keep.sum())
    rows.keep, iters = k_core(
        rows.user,
        rows.item,
        rows.keep,
        len(rows.user_ids),
        len(rows.item_ids),
        p.min_item_users,
        p.min_user_reviews,
        p.max_user_reviews,
    )
    rows.drops["k-core"] += before - int(rows.keep.sum())
    return iters


def _hold_out(rows: _Rows, p: Protocol) -> _HeldOut:
    """Each user's last ``held_out`` rows (by time, then file order) become targets; users
    with nothing before them are dropped."""
    idx = np.flatnonzero(rows.keep)
    order = idx[_user_time_order(rows.user[idx], rows.ts[idx], rows.line[idx])]
    u_sorted = rows.user[order]
    starts = _group_starts(u_sorted)
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    from_end = np.repeat(counts, counts) - 1 - rank
    held = from_end < p.held_out
    too_few = np.repeat(counts <= p.held_out, counts)
    rows.drops["user has no reviews before the held-out ones"] += int(too_few.sum())
    base = ~held & ~too_few
    held &= ~too_few
    return _HeldOut(order, u_sorted, counts, base, held, too_few)


def _profile_filter(rows: _Rows, h: _HeldOut, p: Protocol) -> int:
    """Iteratively drop base-profile rows on items with too few profile reviewers and the
    targets of users left with too few profile reviews; the iteration count."""
    iters = 0
    it_sorted = rows.item[h.order]
    base, user_ok = h.base, ~np.repeat(h.counts <= p.held_out, h.counts)
    while True:
        iters += 1
        ipu = np.bincount(it_sorted[base], minlength=len(rows.item_ids))
        new_base = base & (ipu[it_sorted] >= p.min_item_profile_users)
        upc = np.bincount(h.u_sorted[new_base], minlength=len(rows.user_ids))
        new_user_ok = user_ok & (upc[h.u_sorted] >= p.min_user_profile_reviews)
        new_base &= new_user_ok
        if new_base.sum() == base.sum() and new_user_ok.sum() == user_ok.sum():
            break
        base, user_ok = new_base, new_user_ok
    h.base = base
    rows.drops["profile review on an item with too few profile reviewers"] += int(
        (~base & ~h.held & ~h.too_few).sum()
    )
    rows.drops["user with too few profile reviews (held-out rows)"] += int(
        (h.held & ~user_ok).sum()
    )
    h.held &= user_ok
    return iters


def _subsample_users(rows: _Rows, h: _HeldOut, max_users: int | None, seed: int) -> None:
    """At most ``max_users`` users with targets, drawn with ``seed``."""
    final_users = np.unique(h.u_sorted[h.held])
    if max_users is None or len(final_users) <= max_users:
        return
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(final_users, size=max_users, replace=False))
    in_sub = np.isin(h.u_sorted, chosen)
    rows.drops["not in the user subsample (max_users)"] += int(((h.base | h.held) & ~in_sub).sum())
    h.base &= in_sub
    h.held &= in_sub


def _samples(rows, h, final_rows, final_sorted, review_id_of_raw, p):
    """The samples table: a user's held-out rows in time order are the train targets (j = 0,
    1..), then val, then test; a target's profile is the user's rows strictly before its
    time. Also the splits, profile lengths, rows excluded as same-time ties and samples
    dropped for an empty profile."""
    f_user = rows.user[final_rows]
    f_ts = rows.ts[final_rows]
    f_rid = review_id_of_raw[final_rows]
    f_held = h.held[final_sorted]
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
    uid = rows.user_ids[f_user[pos]]
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
    return samples, split, lengths, ties_excluded, empty_profiles


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
