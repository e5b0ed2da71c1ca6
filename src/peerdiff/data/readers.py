"""Streaming readers: raw review/metadata JSON Lines (optionally gzip) to Parquet.

One reader serves every JSONL source; a :class:`JsonlFormat` names the fields of each
(Amazon Reviews'23, the McAuley 2014 and 2018 dumps, and peerdiff's generic schema).
Lines are parsed one at a time (orjson) and written in Arrow batches, so memory stays flat
whatever the file size. Problems are reported as ``file:line: what``:

- malformed JSON, a missing or empty id, a missing or non-numeric rating or timestamp:
  an error (or, with ``on_bad_line="skip"``, a counted skip listed in the stats);
- an empty or missing review text or title: kept here and dropped by the protocol,
  which counts it (DPL drops such reviews).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from peerdiff.config import Source
from peerdiff.data import schema
from peerdiff.errors import DataError

BATCH_ROWS = 50_000
_WS = re.compile(r"\s+")


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
_MCAULEY = dict(
    user=("reviewerID",),
    item=("asin",),
    title=("summary",),
    text=("reviewText",),
    rating=("overall",),
    timestamp=("unixReviewTime",),
    timestamp_divisor=1,
    item_id=("asin",),
    item_title=("title",),
    item_description=("description",),
)

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


def open_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, line)`` for non-blank lines of a plain or gzip file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield n, line


def _get(rec: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in rec:
            return rec[k]
    return None


def _number(value: Any) -> float | None:
    """A finite number from an int, float or numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) else None


def text_hash(text: str) -> int:
    """A stable 64-bit hash of a text (the embedding cache's key)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def dedup_hash(text: str) -> int:
    """A fast stable 64-bit hash of a review text (the protocol's dedup key)."""
    return xxhash.xxh3_64_intdigest(text.encode())


def clean_text(value: Any, normalize: bool) -> str:
    if not isinstance(value, str):
        return ""
    return _WS.sub(" ", value).strip() if normalize else value


def make_description(value: Any) -> str:
    """Item description as DPL builds it: lists joined, a lone 'Product Description' header dropped."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        parts = [str(v) for v in value if v is not None]
        if parts and parts[0] == "Product Description":
            parts = parts[1:]
        return " ".join(parts).strip()
    return str(value)


def _parse(path: Path, n: int, line: bytes) -> dict:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise DataError(f"{path}:{n}: malformed JSON ({e})", "malformed JSON") from None
    if not isinstance(rec, dict):
        raise DataError(
            f"{path}:{n}: expected a JSON object, got {type(rec).__name__}", "not an object"
        )
    return rec


def _missing(path: Path, n: int, key: str) -> DataError:
    return DataError(f"{path}:{n}: missing required field {key!r}", f"missing field {key!r}")


def _not_number(path: Path, n: int, key: str, value: Any) -> DataError:
    return DataError(
        f"{path}:{n}: field {key!r} is not a number: {value!r}", f"non-numeric {key!r}"
    )


def read_reviews(
    path: str | Path,
    fmt: JsonlFormat,
    out: str | Path,
    on_bad_line: str = "error",
    normalize_whitespace: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> ReadStats:
    """Stream a review JSONL file into a Parquet file with :data:`schema.RAW_REVIEWS`.

    First the columnar reader (:func:`read_reviews_columnar`: pyarrow's multithreaded JSON
    parser, vectorised clean-up); a file it cannot take as it is (a malformed line, a missing
    id, a rating written as a string...) is read again line by line, which names the file
    and line of each problem (and, with ``on_bad_line="skip"``, skips and counts them).
    ``progress`` is called with the number of lines read since its last call.

    Raises:
        DataError: with ``file:line`` for malformed lines when ``on_bad_line == "error"``.
    """
    stats = read_reviews_columnar(path, fmt, out, normalize_whitespace, progress)
    if stats is not None:
        return stats
    return read_reviews_lines(path, fmt, out, on_bad_line, normalize_whitespace, progress)


class _Fallback(Exception):
    """The columnar reader cannot take this file as it is."""


def _coalesce(table: pa.Table, keys: tuple[str, ...]) -> pa.ChunkedArray | None:
    cols = [table[k] for k in keys if k in table.column_names]
    if not cols:
        return None
    return cols[0] if len(cols) == 1 else pc.coalesce(*cols)


# Python's ``\s`` (and ``str.strip``) for RE2: ASCII controls, \x1c-\x1f, NEL and Unicode Z*.
# Only runs that change are matched (one holding a non-space blank, or two spaces), so RE2
# skips ordinary single spaces instead of replacing each of them (4x faster).
_BLANK_RE2 = r"[\t\n\x0b\x0c\r\x1c-\x1f\x{85}\p{Z}]"
_NOT_SPACE_RE2 = (
    r"[\t\n\x0b\x0c\r\x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
    r"\x{202f}\x{205f}\x{3000}]"
)
_WS_RE2 = _BLANK_RE2 + "*(?:" + _NOT_SPACE_RE2 + "|  )" + _BLANK_RE2 + "*"


def _clean(col: pa.ChunkedArray | None, n: int, normalize: bool) -> pa.Array:
    if col is None:
        return pa.array([""] * n, pa.string())
    col = pc.fill_null(col.cast(pa.string()), "")
    if normalize:
        col = pc.utf8_trim(pc.replace_substring_regex(col, _WS_RE2, " "), " ")
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def read_reviews_columnar(
    path: str | Path,
    fmt: JsonlFormat,
    out: str | Path,
    normalize_whitespace: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> ReadStats | None:
    """The fast path of :func:`read_reviews`; ``None`` when the file needs the line reader.

    Rows keep file order (``line`` counts records; blank lines are not counted here).
    """
    import numpy as np
    import pyarrow.json as pj

    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    strings = {*fmt.user, *fmt.item, *fmt.title, *fmt.text}
    schema_ = pa.schema(
        [(k, pa.string()) for k in sorted(strings)]
        + [(k, pa.float64()) for k in fmt.rating]
        + [(k, pa.int64()) for k in fmt.timestamp]
    )
    stats = ReadStats()
    tmp = Path(str(out) + ".columnar")
    try:
        stream = pa.input_stream(str(path), compression="gzip" if gz else None)
        reader = pj.open_json(
            stream,
            read_options=pj.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pj.ParseOptions(
                explicit_schema=schema_, unexpected_field_behavior="ignore"
            ),
        )
        with pq.ParquetWriter(tmp, schema.RAW_REVIEWS, compression="zstd") as writer:
            for batch in reader:
                t = pa.Table.from_batches([batch])
                n = t.num_rows
                user, item = _coalesce(t, fmt.user), _coalesce(t, fmt.item)
                rating, ts = _coalesce(t, fmt.rating), _coalesce(t, fmt.timestamp)
                for col in (user, item):
                    if (
                        col is None
                        or col.null_count
                        or pc.any(pc.equal(pc.utf8_trim_whitespace(col), "")).as_py()
                    ):
                        raise _Fallback
                for col in (rating, ts):
                    if (
                        col is None
                        or col.null_count
                        or not pc.all(pc.is_finite(col.cast(pa.float64()))).as_py()
                    ):
                        raise _Fallback
                text = _clean(_coalesce(t, fmt.text), n, normalize_whitespace)
                title = _clean(_coalesce(t, fmt.title), n, normalize_whitespace)
                hashes = np.fromiter(
                    (xxhash.xxh3_64_intdigest(x) for x in _utf8_bytes(text)), np.uint64, n
                )
                line = np.arange(stats.lines + 1, stats.lines + n + 1, dtype=np.int64)
                out_t = pa.table(
                    {
                        "user_id": user.cast(pa.string()),
                        "item_id": item.cast(pa.string()),
                        "rating": rating.cast(pa.float64()),
                        "title": title,
                        "text": text,
                        "timestamp": ts.cast(pa.int64()).to_numpy() // fmt.timestamp_divisor,
                        "line": line,
                        "text_hash": hashes,
                        "text_len": pc.utf8_length(text).cast(pa.int32()),
                        "title_len": pc.utf8_length(title).cast(pa.int32()),
                    },
                    schema=schema.RAW_REVIEWS,
                )
                writer.write_table(out_t)
                stats.lines += n
                stats.rows += n
                if progress is not None:
                    progress(n)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, _Fallback, OSError):
        tmp.unlink(missing_ok=True)
        if progress is not None:
            progress(-stats.lines)  # the line reader starts over
        return None
    os.replace(tmp, out)
    return stats


def _utf8_bytes(arr: pa.Array):
    """Each string's UTF-8 bytes, without building Python strings."""
    import numpy as np

    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    mem = memoryview(data) if data is not None else memoryview(b"")
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        yield mem[a:b]


def read_reviews_lines(
    path: str | Path,
    fmt: JsonlFormat,
    out: str | Path,
    on_bad_line: str = "error",
    normalize_whitespace: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> ReadStats:
    """The line-by-line reader: every problem named by ``file:line``."""
    path = Path(path)
    stats = ReadStats()
    cols: dict[str, list] = {name: [] for name in schema.RAW_REVIEWS.names}
    with pq.ParquetWriter(out, schema.RAW_REVIEWS, compression="zstd") as writer:

        def flush() -> None:
            if cols["line"]:
                writer.write_table(pa.Table.from_pydict(cols, schema=schema.RAW_REVIEWS))
                for v in cols.values():
                    v.clear()

        for n, line in open_lines(path):
            stats.lines += 1
            if progress is not None and stats.lines % 10_000 == 0:
                progress(10_000)
            try:
                rec = _parse(path, n, line)
                user = _get(rec, fmt.user)
                item = _get(rec, fmt.item)
                for key, value in ((fmt.user[0], user), (fmt.item[0], item)):
                    if value is None or (isinstance(value, str) and not value.strip()):
                        raise _missing(path, n, key)
                rating_raw = _get(rec, fmt.rating)
                if rating_raw is None:
                    raise _missing(path, n, fmt.rating[0])
                rating = _number(rating_raw)
                if rating is None:
                    raise _not_number(path, n, fmt.rating[0], rating_raw)
                ts_raw = _get(rec, fmt.timestamp)
                if ts_raw is None:
                    raise _missing(path, n, fmt.timestamp[0])
                ts = _number(ts_raw)
                if ts is None:
                    raise _not_number(path, n, fmt.timestamp[0], ts_raw)
            except DataError as e:
                if on_bad_line == "error":
                    raise
                stats.skip(e.reason, str(e))
                continue
            text = clean_text(_get(rec, fmt.text), normalize_whitespace)
            title = clean_text(_get(rec, fmt.title), normalize_whitespace)
            cols["user_id"].append(str(user))
            cols["item_id"].append(str(item))
            cols["rating"].append(rating)
            cols["title"].append(title)
            cols["text"].append(text)
            cols["text_len"].append(len(text))
            cols["title_len"].append(len(title))
            cols["timestamp"].append(int(ts // fmt.timestamp_divisor))
            cols["line"].append(n)
            cols["text_hash"].append(dedup_hash(text))
            stats.rows += 1
            if len(cols["line"]) >= BATCH_ROWS:
                flush()
        flush()
    if progress is not None:
        progress(stats.lines % 10_000)
    return stats


def read_items(
    path: str | Path,
    fmt: JsonlFormat,
    out: str | Path,
    on_bad_line: str = "error",
) -> ReadStats:
    """Stream item metadata JSONL into Parquet (:data:`schema.RAW_ITEMS`); first record per id wins."""
    path = Path(path)
    stats = ReadStats()
    seen: set[str] = set()
    cols: dict[str, list] = {name: [] for name in schema.RAW_ITEMS.names}
    for n, line in open_lines(path):
        stats.lines += 1
        try:
            rec = _parse(path, n, line)
            item = _get(rec, fmt.item_id)
            if item is None or (isinstance(item, str) and not item.strip()):
                raise _missing(path, n, fmt.item_id[0])
        except DataError as e:
            if on_bad_line == "error":
                raise
            stats.skip(e.reason, str(e))
            continue
        item = str(item)
        if item in seen:
            stats.duplicates += 1
            continue
        seen.add(item)
        title = _get(rec, fmt.item_title)
        cols["item_id"].append(item)
        cols["title"].append(clean_text(title, True))
        cols["description"].append(make_description(_get(rec, fmt.item_description)))
        cats = _get(rec, fmt.item_categories) if fmt.item_categories else None
        cols["has_categories"].append(bool(cats) if fmt.item_categories else True)
        rn = _get(rec, fmt.item_rating_number) if fmt.item_rating_number else None
        cols["has_rating_number"].append(bool(rn) if fmt.item_rating_number else True)
        cols["line"].append(n)
        stats.rows += 1
    pq.write_table(pa.Table.from_pydict(cols, schema=schema.RAW_ITEMS), out, compression="zstd")
    return stats
