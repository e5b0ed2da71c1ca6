"""Streaming readers: raw review/metadata JSON Lines (optionally gzip) to Parquet.

One reader serves every JSONL source; a :class:`JsonlFormat` names the fields of each
(Amazon Reviews'23, the McAuley 2014 and 2018 dumps, and peerdiff's generic schema).
Well-formed review files go through the columnar reader (:mod:`peerdiff.data.columnar`);
the line reader here parses one line at a time (orjson) and writes Arrow batches, so memory
stays flat whatever the file size, and reports problems as ``file:line: what``:

- malformed JSON, a missing or empty id, an id that is not a string or an integer, a
  missing or non-numeric rating or timestamp, a rating outside ``RATING_RANGE``, a
  timestamp before 1970 or after the year 3000, a text or title that is not a string:
  an error (or, with ``on_bad_line="skip"``, a counted skip listed in the stats);
- an empty or missing review text or title: kept here and dropped by the protocol,
  which counts it (DPL drops such reviews).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from peerdiff.config import DataConfig, Source
from peerdiff.data import schema
from peerdiff.data.columnar import read_reviews_columnar
from peerdiff.data.formats import MAX_TIMESTAMP, RATING_RANGE, JsonlFormat, ReadStats
from peerdiff.errors import DataError
from peerdiff.stage import atomic_path

BATCH_ROWS = 50_000
_WS = re.compile(r"\s+")


def open_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, line)`` for non-blank lines of a plain or gzip file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    n = 0
    with opener(path, "rb") as f:
        try:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    yield n, line
        except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip
            if not gz:
                raise
            raise DataError(
                f"{path}:{n + 1}: the gzip stream is damaged after line {n} ({e}); "
                "download the file again"
            ) from e


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
        f"{path}:{n}: field {key!r} is not a number: {_short(value)}", f"non-numeric {key!r}"
    )


def _short(value: Any, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def _check_review(path: Path, n: int, rec: dict, fmt: JsonlFormat, rating: float, ts: float):
    """Types and ranges the protocol relies on (raises :class:`DataError` naming the field)."""
    for keys in (fmt.user, fmt.item):
        v = _get(rec, keys)
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise DataError(
                f"{path}:{n}: field {keys[0]!r} must be a string or an integer id, got "
                f"{type(v).__name__} {_short(v)}",
                f"bad {keys[0]!r}",
            )
    lo, hi = RATING_RANGE
    if not lo <= rating <= hi:
        raise DataError(
            f"{path}:{n}: field {fmt.rating[0]!r} = {rating:g} is outside [{lo:g}, {hi:g}]",
            f"out-of-range {fmt.rating[0]!r}",
        )
    secs = ts / fmt.timestamp_divisor
    if not 0 <= secs <= MAX_TIMESTAMP:
        raise DataError(
            f"{path}:{n}: field {fmt.timestamp[0]!r} = {ts:g} is not a time between 1970 and "
            f"3000 (in {'milliseconds' if fmt.timestamp_divisor == 1000 else 'seconds'})",
            f"out-of-range {fmt.timestamp[0]!r}",
        )
    for keys in (fmt.text, fmt.title):
        v = _get(rec, keys)
        if v is not None and not isinstance(v, str):
            raise DataError(
                f"{path}:{n}: field {keys[0]!r} must be a string, got {type(v).__name__} "
                f"{_short(v)}",
                f"non-string {keys[0]!r}",
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

    First the columnar reader (:mod:`peerdiff.data.columnar`: pyarrow's multithreaded JSON
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
    with (
        atomic_path(out) as tmp,  # an error leaves no partial table behind
        pq.ParquetWriter(tmp, schema.RAW_REVIEWS, **schema.RAW_WRITE_OPTIONS) as writer,
    ):

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
                _check_review(path, n, rec, fmt, rating, ts)
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


def require_input(path: Path | None, what: str, data: DataConfig) -> Path:
    """``path`` when it exists (a folder only for the sources that read folders); a
    :class:`DataError` naming the setting to fix otherwise."""
    if path is None or not path.exists():
        raise DataError(
            f"{what} file not found: {path}. Set data.root (or the PEERDIFF_DATA environment "
            f"variable; now {data.root!r}) or give an absolute path in data.{what}."
        )
    if path.is_dir() and data.source not in (Source.lamp, Source.dpl):  # those read folders
        raise DataError(
            f"data.{what}: {path} is a directory; give the {what} file inside it "
            f"(e.g. {next((p.name for p in sorted(path.glob('*.json*'))), 'reviews.jsonl.gz')})"
        )
    return path
