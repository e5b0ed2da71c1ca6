"""The columnar review reader: pyarrow's multithreaded JSON parser and vectorised clean-up.

The fast path of :func:`peerdiff.data.readers.read_reviews`. It takes a file only when
every line is well formed (ids present, numbers numeric); otherwise it returns ``None`` and
the line reader reads the file again, naming the file and line of each problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from peerdiff.data import schema
from peerdiff.data.formats import MAX_TIMESTAMP, RATING_RANGE, JsonlFormat, ReadStats
from peerdiff.errors import DataError


class _Fallback(Exception):
    """The columnar reader cannot take this file as it is."""


def _coalesce(table: pa.Table, keys: tuple[str, ...]) -> pa.ChunkedArray | None:
    cols = [table[k] for k in keys if k in table.column_names]
    if not cols:
        return None
    return cols[0] if len(cols) == 1 else pc.coalesce(*cols)


# Python's ``\s`` (and ``str.strip``) for RE2: ASCII controls, \x1c-\x1f, NEL and Unicode Z*.
# Only runs that change are matched (one holding a non-space blank, or two spaces), so RE2
# skips ordinary single spaces instead of replacing each of them (several times faster).
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
    stream = None
    try:
        stream = _input_stream(path, gz)
        reader = pj.open_json(
            stream,
            read_options=pj.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pj.ParseOptions(
                explicit_schema=schema_, unexpected_field_behavior="ignore"
            ),
        )
        with pq.ParquetWriter(tmp, schema.RAW_REVIEWS, **schema.RAW_WRITE_OPTIONS) as writer:
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
                lo, hi = RATING_RANGE  # out of range: the line reader names the line
                r64, t64 = rating.cast(pa.float64()), ts.cast(pa.float64())
                if (
                    pc.any(pc.or_(pc.less(r64, lo), pc.greater(r64, hi))).as_py()
                    or pc.any(pc.less(t64, 0)).as_py()
                    or pc.any(pc.greater(t64, MAX_TIMESTAMP * fmt.timestamp_divisor)).as_py()
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
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        _Fallback,
        *_GZ_ERRORS,
    ):
        tmp.unlink(missing_ok=True)
        if progress is not None:
            progress(-stats.lines)  # the line reader starts over
        return None
    finally:
        if stream is not None:
            stream.close()
    os.replace(tmp, out)
    return stats


def _gzip_errors() -> tuple[type[BaseException], ...]:
    """What a truncated or corrupt gzip raises here (the line reader then names the line)."""
    try:
        from isal.isal_zlib import error as isal_error
    except ImportError:
        return (OSError, EOFError)
    return (OSError, EOFError, isal_error)


_GZ_ERRORS = _gzip_errors()


def _input_stream(path: Path, gz: bool):
    """The file's bytes for pyarrow, gunzipped by ISA-L on a thread of its own when ``isal``
    is installed: zlib's inflate is a large share of the read, and ISA-L inflates in a
    fraction of its time (docs/benchmarks.md)."""
    if not gz:
        return pa.input_stream(str(path))
    try:
        from isal import igzip_threaded
    except ImportError:
        return pa.input_stream(str(path), compression="gzip")
    return pa.PythonFile(igzip_threaded.open(path, "rb", threads=1, block_size=1 << 22), "r")


def _utf8_bytes(arr: pa.Array):
    """Each string's UTF-8 bytes, without building Python strings."""
    import numpy as np

    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    mem = memoryview(data) if data is not None else memoryview(b"")
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        yield mem[a:b]
