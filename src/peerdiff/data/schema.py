"""Canonical tables (Parquet) and their row types.

- ``reviews``: one row per review; ``review_id`` is dense (0..n-1) and indexes vector files.
- ``items``: item metadata shown in prompts.
- ``samples``: one generation task: a user, a target review, and the user's profile, i.e. the
  review ids written strictly before the target (oldest first).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

REVIEWS = pa.schema(
    [
        ("review_id", pa.int64()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("rating", pa.float64()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("timestamp", pa.int64()),
    ]
)

ITEMS = pa.schema([("item_id", pa.string()), ("title", pa.string()), ("description", pa.string())])

SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("user_id", pa.string()),
        ("target", pa.int64()),
        ("profile", pa.list_(pa.int64())),
    ]
)

# What the readers produce before the protocol runs (one row per input line kept).
RAW_REVIEWS = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("rating", pa.float64()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("timestamp", pa.int64()),
        ("line", pa.int64()),  # file order (line reader: line number; columnar: record number)
        ("text_hash", pa.uint64()),
        ("text_len", pa.int32()),
        ("title_len", pa.int32()),
    ]
)

# Writer options for the raw review table, an intermediate read once by the build step:
# LZ4 writes and reads it faster than zstd (docs/benchmarks.md), and dictionary encoding only
# pays on the id columns (texts are unique; trying a dictionary on them is wasted work).
RAW_WRITE_OPTIONS = {"compression": "lz4", "use_dictionary": ["user_id", "item_id"]}

RAW_ITEMS = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("has_categories", pa.bool_()),
        ("has_rating_number", pa.bool_()),
        ("line", pa.int64()),  # file order (line reader: line number; columnar: record number)
    ]
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Review:
    review_id: int
    user_id: str
    item_id: str
    rating: float
    title: str
    text: str
    timestamp: int


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    description: str


@dataclass(frozen=True)
class Sample:
    sample_id: str
    split: str
    user_id: str
    target: int
    profile: tuple[int, ...]
