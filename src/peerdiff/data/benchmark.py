"""In-memory view of a prepared benchmark: reviews by id, items by id, samples by split."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from peerdiff.data.schema import Item, Review, Sample


class UnknownUserError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


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

    def sample(self, sample_id: str) -> Sample:
        for s in self._samples:
            if s.sample_id == sample_id:
                return s
        raise KeyError(sample_id)

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

    def latest_profile(self, user_id: str) -> tuple[int, ...]:
        """The user's longest profile (the test sample's), for serving new items."""
        best: Sample | None = None
        for s in self._samples:
            if s.user_id == user_id and (best is None or len(s.profile) > len(best.profile)):
                best = s
        if best is None:
            raise UnknownUserError(f"unknown user {user_id!r}: not in benchmark {self.dir}")
        return best.profile
