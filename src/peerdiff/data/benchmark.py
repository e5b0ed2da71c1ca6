"""In-memory view of a prepared benchmark: reviews by id, items by id, samples by split."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from peerdiff.data.schema import Item, Review, Sample
from peerdiff.errors import UnknownUserError


class _Concat(Sequence):
    """Read-only concatenation of two sequences without copying the first."""

    def __init__(self, base: Sequence, extra: Sequence) -> None:
        self.base, self.extra = base, extra

    def __len__(self) -> int:
        return len(self.base) + len(self.extra)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        n = len(self.base)
        return self.base[i] if i < n else self.extra[i - n]


class Benchmark:
    """Reviews, items and samples of one prepared benchmark directory.

    Args:
        directory: a ``prepare`` stage directory holding ``reviews``/``items``/``samples``.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        r = pq.read_table(self.dir / "reviews.parquet")
        ids = r["review_id"].to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise ValueError(f"{self.dir}/reviews.parquet: review_id must be 0..n-1 in order")
        self.user_ids: list[str] = r["user_id"].to_pylist()
        self.item_ids: list[str] = r["item_id"].to_pylist()
        self.ratings = r["rating"].to_numpy()
        self.titles: list[str] = r["title"].to_pylist()
        self.texts: list[str] = r["text"].to_pylist()
        self.timestamps = r["timestamp"].to_numpy()
        it = pq.read_table(self.dir / "items.parquet").to_pydict()
        self.items = {
            i: Item(i, t or "", d or "")
            for i, t, d in zip(it["item_id"], it["title"], it["description"])
        }
        s = pq.read_table(self.dir / "samples.parquet").to_pydict()
        self._samples = [
            Sample(sid, sp, u, int(t), tuple(p))
            for sid, sp, u, t, p in zip(
                s["sample_id"], s["split"], s["user_id"], s["target"], s["profile"]
            )
        ]

    def __len__(self) -> int:
        return len(self.texts)

    def review(self, rid: int) -> Review:
        return Review(
            rid,
            self.user_ids[rid],
            self.item_ids[rid],
            float(self.ratings[rid]),
            self.titles[rid],
            self.texts[rid],
            int(self.timestamps[rid]),
        )

    def item(self, item_id: str) -> Item:
        return self.items.get(item_id) or Item(item_id, "", "")

    def samples(self, split: str | None = None) -> list[Sample]:
        return [s for s in self._samples if split is None or s.split == split]

    @cached_property
    def _by_id(self) -> dict[str, Sample]:
        return {s.sample_id: s for s in self._samples}

    @cached_property
    def _latest(self) -> dict[str, Sample]:
        """Each user's sample with the longest profile."""
        out: dict[str, Sample] = {}
        for s in self._samples:
            best = out.get(s.user_id)
            if best is None or len(s.profile) > len(best.profile):
                out[s.user_id] = s
        return out

    def sample(self, sample_id: str) -> Sample:
        return self._by_id[sample_id]

    @cached_property
    def target_mask(self) -> np.ndarray:
        """True for reviews that are the target of some sample."""
        m = np.zeros(len(self), dtype=bool)
        m[[s.target for s in self._samples]] = True
        return m

    @cached_property
    def profile_mask(self) -> np.ndarray:
        """True for reviews that appear in some sample's profile (the only ones ever embedded)."""
        m = np.zeros(len(self), dtype=bool)
        for s in self._samples:
            m[list(s.profile)] = True
        return m

    @cached_property
    def base_mask(self) -> np.ndarray:
        """True for reviews in some profile and never a target: the pool peers come from."""
        return self.profile_mask & ~self.target_mask

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes of each review's user and item (sorted-id order)."""
        _, u = np.unique(np.asarray(self.user_ids, dtype=object), return_inverse=True)
        _, i = np.unique(np.asarray(self.item_ids, dtype=object), return_inverse=True)
        return u.astype(np.int64), i.astype(np.int64)

    def profile_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All profiles as one array plus ``(n_samples + 1,)`` offsets, in sample order."""
        lens = np.array([len(s.profile) for s in self._samples], dtype=np.int64)
        flat = np.fromiter(
            (r for s in self._samples for r in s.profile), dtype=np.int64, count=int(lens.sum())
        )
        return flat, np.r_[0, np.cumsum(lens)]

    @cached_property
    def users(self) -> list[str]:
        return sorted({s.user_id for s in self._samples})

    def latest_sample(self, user_id: str) -> Sample:
        """The user's sample with the longest profile (the test sample)."""
        best = self._latest.get(user_id)
        if best is None:
            raise UnknownUserError(f"unknown user {user_id!r}: not in the prepared benchmark")
        return best

    def history(self, user_id: str) -> tuple[int, ...]:
        """Every known review of the user, oldest first (latest profile + its target)."""
        s = self.latest_sample(user_id)
        return (*s.profile, s.target)

    def extended(self, reviews: Sequence[Review], items: Sequence[Item] = ()) -> Benchmark:
        """A view with extra reviews (ids ``len(self)..``) and items, sharing this one's data.

        Used to pose new requests (a new item, an inline history) to the methods; the extra
        reviews are in no profile and never peers.
        """
        ext = object.__new__(Benchmark)
        ext.dir = self.dir
        n = len(self)
        for r_i, r in enumerate(reviews):
            if r.review_id != n + r_i:
                raise ValueError(f"extra review ids must continue at {n}, got {r.review_id}")
        ext.user_ids = _Concat(self.user_ids, [r.user_id for r in reviews])
        ext.item_ids = _Concat(self.item_ids, [r.item_id for r in reviews])
        ext.titles = _Concat(self.titles, [r.title for r in reviews])
        ext.texts = _Concat(self.texts, [r.text for r in reviews])
        ext.ratings = np.r_[self.ratings, [r.rating for r in reviews]]
        ext.timestamps = np.r_[self.timestamps, [r.timestamp for r in reviews]].astype(np.int64)
        ext.items = {**self.items, **{i.item_id: i for i in items}}
        ext._samples = self._samples
        for name in ("_by_id", "_latest", "users"):  # share the indexes, built once
            ext.__dict__[name] = getattr(self, name)
        pad = np.zeros(len(reviews), dtype=bool)
        for name in ("target_mask", "profile_mask", "base_mask"):
            ext.__dict__[name] = np.r_[getattr(self, name), pad]
        return ext
