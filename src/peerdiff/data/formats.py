"""What the review readers (:mod:`peerdiff.data.readers`, :mod:`peerdiff.data.columnar`) share:
each source's JSONL field names, the plausible value ranges, and the reading statistics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from peerdiff.config import Source

RATING_RANGE = (0.0, 10.0)  # star ratings (Amazon: 1-5); anything else is a broken line
MAX_TIMESTAMP = 32_503_680_000  # seconds: 3000-01-01


@dataclass(frozen=True)
class JsonlFormat:
    """Field names of one JSONL source (first present key wins)."""

    user: tuple[str, ...]
    item: tuple[str, ...]
    title: tuple[str, ...]
    text: tuple[str, ...]
    rating: tuple[str, ...]
    timestamp: tuple[str, ...]
    timestamp_divisor: int  # raw units per second
    item_id: tuple[str, ...]
    item_title: tuple[str, ...]
    item_description: tuple[str, ...]
    item_categories: tuple[str, ...] = ()
    item_rating_number: tuple[str, ...] = ()


# McAuley 2014 and 2018 dumps: same review and item fields; categories are named apart
_MCAULEY = {
    "user": ("reviewerID",),
    "item": ("asin",),
    "title": ("summary",),
    "text": ("reviewText",),
    "rating": ("overall",),
    "timestamp": ("unixReviewTime",),
    "timestamp_divisor": 1,
    "item_id": ("asin",),
    "item_title": ("title",),
    "item_description": ("description",),
}

FORMATS: dict[Source, JsonlFormat] = {
    Source.amazon23: JsonlFormat(
        user=("user_id",),
        item=("parent_asin", "asin"),
        title=("title",),
        text=("text",),
        rating=("rating",),
        timestamp=("timestamp",),
        timestamp_divisor=1000,
        item_id=("parent_asin",),
        item_title=("title",),
        item_description=("description",),
        item_categories=("categories",),
        item_rating_number=("rating_number",),
    ),
    Source.amazon2014: JsonlFormat(**_MCAULEY, item_categories=("categories",)),
    Source.amazon2018: JsonlFormat(**_MCAULEY, item_categories=("category",)),
    Source.generic: JsonlFormat(
        user=("user_id",),
        item=("item_id",),
        title=("title",),
        text=("text",),
        rating=("rating",),
        timestamp=("timestamp",),
        timestamp_divisor=1,
        item_id=("item_id",),
        item_title=("title",),
        item_description=("description",),
        item_categories=("categories",),
    ),
}


@dataclass
class ReadStats:
    """What a reader saw: lines, rows kept, and skipped lines by reason (with examples)."""

    lines: int = 0
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    duplicates: int = 0

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "rows": self.rows,
            "skipped": dict(self.skipped),
            "skipped_examples": self.examples,
            "duplicate_ids": self.duplicates,
        }
