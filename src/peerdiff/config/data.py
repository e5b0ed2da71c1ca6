"""Data settings: sources, the DPL protocol's thresholds and their presets."""

from __future__ import annotations

import enum
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from peerdiff.config.parse import _convert
from peerdiff.errors import ConfigError, did_you_mean


class Source(str, enum.Enum):
    """Formats the data readers understand."""

    amazon23 = "amazon23"  # Amazon Reviews'23 JSONL (reviews + meta)
    amazon2014 = "amazon2014"  # McAuley 2014 field names (reviewerID, asin, reviewText, ...)
    amazon2018 = "amazon2018"  # McAuley 2018 field names (same review fields, list descriptions)
    generic = "generic"  # peerdiff's own JSONL schema (see README)
    dpl = "dpl"  # published DPL-main / DPL-meta (Hugging Face datasets, on disk or hub)
    lamp = "lamp"  # LaMP-style split files: LongLaMP product review, peerdiff export


def default_data_root() -> str:
    return os.environ.get("PEERDIFF_DATA", "../shared/data")


def default_cache_dir() -> str:
    return os.environ.get("PEERDIFF_CACHE", str(Path.home() / ".cache" / "peerdiff"))


@dataclass
class Protocol:
    """Thresholds of the DPL benchmark protocol (defaults: the published ``paper`` values)."""

    min_text_chars: int = field(default=200, metadata={"help": "drop reviews with shorter text"})
    min_desc_chars: int = field(default=100, metadata={"help": "item description length, lower"})
    max_desc_chars: int = field(default=2000, metadata={"help": "item description length, upper"})
    require_description: bool = field(
        default=True, metadata={"help": "apply the description filter"}
    )
    require_rating_number: bool = field(default=True, metadata={"help": "items need rating_number"})
    require_categories: bool = field(default=True, metadata={"help": "items need categories"})
    min_item_users: int = field(default=8, metadata={"help": "k-core: reviewers per item"})
    min_user_reviews: int = field(default=18, metadata={"help": "k-core: reviews per user, lower"})
    max_user_reviews: int = field(default=500, metadata={"help": "k-core: reviews per user, upper"})
    n_train_targets: int = field(default=8, metadata={"help": "held-out train targets per user"})
    min_item_profile_users: int = field(default=5, metadata={"help": "profile items: reviewers"})
    min_user_profile_reviews: int = field(default=8, metadata={"help": "profile reviews per user"})
    normalize_whitespace: bool = field(default=True, metadata={"help": "collapse runs of spaces"})

    def __post_init__(self) -> None:
        for name in ("min_text_chars", "min_desc_chars", "min_item_users", "min_user_reviews"):
            if getattr(self, name) < 0:
                raise ConfigError(f"protocol.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_desc_chars < self.min_desc_chars:
            raise ConfigError(
                f"protocol.max_desc_chars ({self.max_desc_chars}) < min_desc_chars ({self.min_desc_chars})"
            )
        if self.max_user_reviews < self.min_user_reviews:
            raise ConfigError(
                f"protocol.max_user_reviews ({self.max_user_reviews}) < "
                f"min_user_reviews ({self.min_user_reviews})"
            )
        if self.n_train_targets < 0:
            raise ConfigError(f"protocol.n_train_targets must be >= 0, got {self.n_train_targets}")
        if self.min_user_profile_reviews < 1:
            raise ConfigError(
                "protocol.min_user_profile_reviews must be >= 1 "
                f"(a user needs a history), got {self.min_user_profile_reviews}"
            )

    @property
    def held_out(self) -> int:
        """Reviews held out per user: the train targets, one validation and one test target."""
        return self.n_train_targets + 2


PRESETS: dict[str, Protocol] = {
    # Thresholds of DPL's data-create.py (Amazon Reviews'23, Books / CDs / Movies).
    "paper": Protocol(),
    # Fits the bundled Digital Music sample (6,908 reviews): ~90 users with >= 10 reviews.
    "small": Protocol(
        min_text_chars=100,
        require_description=False,
        require_rating_number=False,
        require_categories=False,
        min_item_users=2,
        min_user_reviews=10,
        n_train_targets=4,
        min_item_profile_users=2,
        min_user_profile_reviews=3,
    ),
    # Users with >= 5 reviews after the text filter (~317 on the bundled sample): wider
    # tests for tighter intervals; 2 train targets per user.
    "medium": Protocol(
        min_text_chars=100,
        require_description=False,
        require_rating_number=False,
        require_categories=False,
        min_item_users=2,
        min_user_reviews=5,
        n_train_targets=2,
        min_item_profile_users=2,
        min_user_profile_reviews=1,
    ),
}


@dataclass
class DataConfig:
    source: Source = field(
        default=Source.amazon23,
        metadata={
            "help": "input format: amazon23, amazon2014, amazon2018, generic (JSONL files), "
            "dpl (DPL-main), lamp (LaMP split files); docs/data.md"
        },
    )
    root: str = field(
        default_factory=default_data_root, metadata={"help": "base of relative paths"}
    )
    reviews: str = field(
        default="amazon-2023-schema-digital-music/Digital_Music.jsonl.gz",
        metadata={
            "help": "reviews JSONL (.gz allowed); dpl: a saved DPL-main folder or "
            "hub:<repo>; lamp: a folder of split files"
        },
    )
    items: str | None = field(
        default="amazon-2023-schema-digital-music/meta_Digital_Music.jsonl.gz",
        metadata={
            "help": "item metadata (titles, descriptions); dpl: DPL-meta; null: none; "
            "lamp reads none"
        },
    )
    category: str | None = field(default=None, metadata={"help": "DPL-main config, e.g. Books"})
    preset: str = field(
        default="small",
        metadata={
            "help": "protocol thresholds: paper (DPL's), small or medium; data.protocol.* "
            "overrides one (dpl and lamp keep their own splits)"
        },
    )
    protocol: dict[str, Any] = field(default_factory=dict, metadata={"help": "preset overrides"})
    on_bad_line: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "a malformed input line: error stops prepare with file:line; skip drops "
            "it and counts it in stats.json"
        },
    )
    max_users: int | None = field(default=None, metadata={"help": "keep this many users (seeded)"})

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(
                f"data.preset: {self.preset!r} is not one of {sorted(PRESETS)}"
                f"{did_you_mean(self.preset, sorted(PRESETS))}"
            )
        known = {f.name for f in fields(Protocol)}
        for key in self.protocol:
            if key not in known:
                raise ConfigError(
                    f"unknown key data.protocol.{key}"
                    f"{did_you_mean(key, sorted(known), 'data.protocol.')}; known: {sorted(known)}"
                )
        self.resolved_protocol()  # validates values early
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"data.max_users must be >= 1, got {self.max_users}")

    def resolved_protocol(self) -> Protocol:
        base = asdict(PRESETS[self.preset])
        for key, value in self.protocol.items():
            base[key] = _convert(
                typing.get_type_hints(Protocol)[key], value, f"data.protocol.{key}"
            )
        return Protocol(**base)

    def path(self, rel: str | None) -> Path | None:
        """Resolve a data path against ``root``; ``None`` stays ``None``."""
        if rel is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(rel)))
        return p if p.is_absolute() else Path(self.root) / p
