"""Stage 1, ``prepare``: raw files -> benchmark tables, in two resumable sub-stages.

``prepare/raw`` (ingest) reads the JSONL files once into Parquet; its key depends only on
the input files and reader options, so changing protocol thresholds re-runs only the cheap
``prepare`` build on the raw Parquet.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from peerdiff.config import DataConfig, RunConfig, Source
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.build import build_benchmark
from peerdiff.data.formats import FORMATS
from peerdiff.data.readers import read_items, read_reviews, require_input
from peerdiff.errors import DataError
from peerdiff.stage import Stage, fingerprint, source_fingerprint, write_json

OUTPUTS = ["reviews.parquet", "items.parquet", "samples.parquet", "stats.json"]


def _sources(stage: Stage, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Content identity of each input (:func:`source_fingerprint`), reusing the digests the
    stage recorded last time for files whose path, size and modification time are
    unchanged."""
    known = (stage.manifest() or {}).get("sources") or {}
    return {k: source_fingerprint(p, known.get(k)) for k, p in files.items()}


def _digests(sources: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: v["digest"] for k, v in sources.items()}


def _files(path: Path | None, name: str) -> dict[str, Path]:
    """The files of an input, by name: the file itself, or every file under a folder (a
    ``datasets`` folder, a LaMP folder); nothing for a path that is not there (a hub name)."""
    if path is None or not path.exists():
        return {}
    if path.is_file():
        return {name: path}
    return {f"{name}/{p.relative_to(path)}": p for p in sorted(path.rglob("*")) if p.is_file()}


def _is_done(stage: Stage, key: str, sources: dict[str, dict[str, Any]], force: bool) -> bool:
    """``stage.is_done(key)``; a finished stage whose inputs were touched, copied or moved
    (same digests, new path or times) records their new identity, so the next call reads
    nothing again."""
    if force or not stage.is_done(key):
        return False
    m = stage.manifest() or {}
    if m.get("sources") != sources:
        write_json(stage.manifest_path, {**m, "sources": sources})
    return True


def prepare(cfg: RunConfig) -> Stage:
    """``peerdiff prepare``: the benchmark tables (keyed on input files and protocol)."""
    return prepare_benchmark(cfg.data, cfg.run_path, cfg.seed)


def prepare_benchmark(data: DataConfig, run_dir: Path, seed: int = 0, force: bool = False) -> Stage:
    """Build (or reuse) the benchmark of ``data`` under ``run_dir/prepare``.

    Returns:
        The finished :class:`Stage`; its manifest holds the statistics.
    """
    stage = Stage(run_dir, "prepare")
    protocol = data.resolved_protocol()
    if data.source == Source.lamp:
        from peerdiff.data.lamp import FORMAT, prepare_lamp

        root = require_input(data.path(data.reviews), "reviews", data)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        sources = _sources(stage, {str(p.relative_to(root)): p for p in files})
        key = fingerprint(FORMAT, _digests(sources), data.max_users)
        if not _is_done(stage, key, sources, force):
            stats = prepare_lamp(root, stage.dir, data.max_users)
            write_json(stage.path("stats.json"), stats)
            stage.finish(key, {"data": _cfg(data)}, OUTPUTS, stats=stats, sources=sources)
        return stage
    if data.source == Source.dpl:
        inputs = {
            **_files(data.path(data.reviews), "reviews"),
            **_files(data.path(data.items), "items"),
        }
        sources = _sources(stage, inputs)
        key = fingerprint(
            "dpl", data.reviews, data.items, _digests(sources), data.category, data.max_users, seed
        )
        if not _is_done(stage, key, sources, force):
            from peerdiff.data.dpl import prepare_dpl

            stats = prepare_dpl(data, stage.dir, seed)
            write_json(stage.path("stats.json"), stats)
            stage.finish(key, {"data": _cfg(data)}, OUTPUTS, stats=stats, sources=sources)
        return stage

    reviews = require_input(data.path(data.reviews), "reviews", data)
    items = require_input(data.path(data.items), "items", data) if data.items else None
    fmt = FORMATS[data.source]
    raw = Stage(stage.dir, "raw")
    sources = _sources(raw, {"reviews": reviews, **({"items": items} if items else {})})
    raw_key = fingerprint(
        "ingest",
        data.source.value,
        sources["reviews"]["digest"],
        sources["items"]["digest"] if items else None,
        protocol.normalize_whitespace,
        data.on_bad_line,
    )
    if not _is_done(raw, raw_key, sources, force):
        raw.dir.mkdir(parents=True, exist_ok=True)
        for stale in [*raw.dir.glob(".*.tmp"), *raw.dir.glob("*.columnar")]:  # a killed ingest
            stale.unlink(missing_ok=True)
        read_stats: dict[str, Any] = {}
        with (
            tqdm(unit=" lines", unit_scale=True, desc=f"read {reviews.name}") as bar,
            _tmp_file(raw.path("reviews.parquet")) as tmp,
        ):
            s = read_reviews(
                reviews, fmt, tmp, data.on_bad_line, protocol.normalize_whitespace, bar.update
            )
        read_stats["reviews"] = s.as_dict()
        if items is not None:
            with _tmp_file(raw.path("items.parquet")) as tmp:
                read_stats["items"] = read_items(items, fmt, tmp, data.on_bad_line).as_dict()
        raw.finish(
            raw_key,
            {"source": data.source.value, "reviews": str(reviews), "items": str(items)},
            ["reviews.parquet"] + (["items.parquet"] if items else []),
            read=read_stats,
            sources=sources,
        )
    read_stats = raw.manifest()["read"]

    key = fingerprint(raw_key, protocol.__dict__, data.max_users, seed)
    if force or not stage.is_done(key):
        tmp_dir = Path(tempfile.mkdtemp(prefix=".build.", dir=stage.dir))
        try:
            stats = build_benchmark(
                raw.path("reviews.parquet"),
                raw.path("items.parquet") if items else None,
                protocol,
                tmp_dir,
                data.max_users,
                seed,
            )
            stats = {"read": read_stats, **stats}
            _require_samples(stats, reviews, data)
            write_json(tmp_dir / "stats.json", stats)
            for name in OUTPUTS:
                (tmp_dir / name).replace(stage.path(name))
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        stage.finish(key, {"data": _cfg(data)}, OUTPUTS, stats=stats)
    return stage


def _require_samples(stats: dict, reviews: Path, data: DataConfig) -> None:
    """Stop at ``prepare`` when nothing is left to train or test on, naming the filter that
    removed the last reviews (an empty benchmark used to run every later stage on n = 0).

    Raises:
        DataError: no users, or no test samples, after the protocol's filters.
    """
    samples = stats.get("samples", {})
    if stats.get("users") and samples.get("test"):
        return
    read = stats.get("read", {}).get("reviews", {})
    skipped = sum((read.get("skipped") or {}).values())
    n = stats.get("input_rows", 0)
    if n == 0:
        why = f"{reviews}: no reviews read"
        if skipped:
            why += f" ({skipped} lines skipped as bad under data.on_bad_line=skip)"
        raise DataError(why + "; check data.reviews and data.source")
    drops = ", ".join(f"{k}: {v}" for k, v in stats.get("dropped_reviews", {}).items())
    where = ""
    if not stats.get("reviews"):  # every review was dropped: name the filter that took the last
        left, last = n, None
        for reason, count in stats.get("dropped_reviews", {}).items():
            if count and left > 0:
                left -= count
                last = reason
        where = f"; the last reviews went at {last!r}"
    preset = getattr(data.preset, "value", data.preset)
    raise DataError(
        f"{reviews}: the protocol's filters left {stats.get('users', 0)} users and "
        f"{samples.get('test', 0)} test samples out of {n} reviews (dropped: {drops or 'none'})"
        f"{where}. Relax data.protocol.* or pick a smaller data.preset (now {preset})"
    )


class _tmp_file:
    """Write to a temp name, rename on success (Parquet writers need a real path)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp")

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.tmp.replace(self.final)
        else:
            self.tmp.unlink(missing_ok=True)


def _cfg(data: DataConfig) -> dict[str, Any]:
    return {
        "source": data.source.value,
        "reviews": data.reviews,
        "items": data.items,
        "preset": data.preset,
        "protocol": data.resolved_protocol().__dict__,
        "max_users": data.max_users,
    }


_BENCHES: dict[tuple[str, str | None], Benchmark] = {}


def benchmark(prep: Stage) -> Benchmark:
    """The benchmark of a prepare stage, loaded once per (directory, key)."""
    k = (str(prep.dir.resolve()), prep.key())
    if k not in _BENCHES:
        _BENCHES.clear()
        _BENCHES[k] = Benchmark(prep.dir)
    return _BENCHES[k]
