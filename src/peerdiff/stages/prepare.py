"""``peerdiff prepare``: raw files -> benchmark tables, in two resumable sub-stages.

``prepare/raw`` (ingest) reads the JSONL files once into Parquet; its key depends only on
the input files and reader options, so changing protocol thresholds re-runs only the cheap
``prepare`` build on the raw Parquet.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from peerdiff.config import DataConfig, Source
from peerdiff.data import schema
from peerdiff.data.build import SAMPLE_SPLITS, build_benchmark
from peerdiff.data.readers import FORMATS, read_items, read_reviews
from peerdiff.errors import DataError, DependencyError
from peerdiff.stage import Stage, fingerprint, source_fingerprint, write_json

OUTPUTS = ["reviews.parquet", "items.parquet", "samples.parquet", "stats.json"]


def _require(path: Path | None, what: str, data: DataConfig) -> Path:
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


def prepare(data: DataConfig, run_dir: Path, seed: int = 0, force: bool = False) -> Stage:
    """Build (or reuse) the benchmark of ``data`` under ``run_dir/prepare``.

    Returns:
        The finished :class:`Stage`; its manifest holds the statistics.
    """
    stage = Stage(run_dir, "prepare")
    protocol = data.resolved_protocol()
    if data.source == Source.lamp:
        from peerdiff.data.lamp import prepare_lamp

        root = _require(data.path(data.reviews), "reviews", data)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        key = fingerprint("lamp", [source_fingerprint(p) for p in files], data.max_users)
        if force or not stage.is_done(key):
            stats = prepare_lamp(root, stage.dir, data.max_users)
            write_json(stage.path("stats.json"), stats)
            stage.finish(key, {"data": _cfg(data)}, OUTPUTS, stats=stats)
        return stage
    if data.source == Source.dpl:
        key = fingerprint("dpl", data.reviews, data.items, data.category, data.max_users, seed)
        if force or not stage.is_done(key):
            stats = _prepare_dpl(data, stage.dir, seed)
            write_json(stage.path("stats.json"), stats)
            stage.finish(key, {"data": _cfg(data)}, OUTPUTS, stats=stats)
        return stage

    reviews = _require(data.path(data.reviews), "reviews", data)
    items = _require(data.path(data.items), "items", data) if data.items else None
    fmt = FORMATS[data.source]
    raw = Stage(stage.dir, "raw")
    raw_key = fingerprint(
        "ingest",
        data.source.value,
        source_fingerprint(reviews),
        source_fingerprint(items) if items else None,
        protocol.normalize_whitespace,
        data.on_bad_line,
    )
    if force or not raw.is_done(raw_key):
        raw.dir.mkdir(parents=True, exist_ok=True)
        for stale in [*raw.dir.glob(".*.tmp"), *raw.dir.glob("*.columnar")]:  # a killed ingest
            stale.unlink(missing_ok=True)
        read_stats: dict[str, Any] = {}
        with tqdm(unit=" lines", unit_scale=True, desc=f"read {reviews.name}") as bar:
            with _tmp_file(raw.path("reviews.parquet")) as tmp:
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


# ----------------------------------------------------------------------------- DPL-main


def _load_dpl(data: DataConfig) -> tuple[Any, Any]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DependencyError("reading DPL-main needs `pip install peerdiff[dpl]`") from e
    main_path = data.path(data.reviews)
    meta_path = data.path(data.items) if data.items else None
    if data.reviews.startswith("hub:"):
        repo = data.reviews[4:]
        meta_repo = (data.items or "hub:SnowCharmQ/DPL-meta")[4:]
        if not data.category:
            raise ValueError("data.category is required for DPL-main from the hub (e.g. Books)")
        main = datasets.load_dataset(repo, data.category)
        meta = datasets.load_dataset(meta_repo, data.category, split="full")
        return main, meta
    main_path = _require(main_path, "reviews", data)
    if data.category and (main_path / data.category).exists():
        main_path = main_path / data.category
    main = datasets.load_from_disk(str(main_path))
    meta = None
    if meta_path is not None:
        meta_path = _require(meta_path, "items", data)
        if data.category and (meta_path / data.category).exists():
            meta_path = meta_path / data.category
        meta = datasets.load_from_disk(str(meta_path))
        if isinstance(meta, datasets.DatasetDict):
            meta = meta["full"]
    return main, meta


def _prepare_dpl(data: DataConfig, out_dir: Path, seed: int) -> dict[str, Any]:
    """Convert DPL-main (train/val/test of user_id, profile, data) into the canonical tables."""
    import numpy as np

    main, meta = _load_dpl(data)
    for split in SAMPLE_SPLITS:
        if split not in main:
            raise DataError(f"DPL-main at {data.reviews}: split {split!r} is missing")
    users = sorted(set(main["test"]["user_id"]))
    if data.max_users is not None and len(users) > data.max_users:
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(np.array(users, dtype=object), data.max_users, replace=False))
    keep_users = set(users)
    index: dict[tuple, int] = {}
    rows: dict[str, list] = {k: [] for k in schema.REVIEWS.names}

    def rid(user: str, r: dict, where: str) -> int:
        for f in ("asin", "text", "timestamp", "rating", "title"):
            if f not in r or r[f] is None:
                raise DataError(f"DPL-main {where}: review is missing field {f!r}")
        ts = int(r["timestamp"]) // 1000  # milliseconds in Amazon'23
        k = (user, r["asin"], ts, r["text"])
        if k not in index:
            index[k] = len(index)
            rows["review_id"].append(index[k])
            rows["user_id"].append(user)
            rows["item_id"].append(str(r["asin"]))
            rows["rating"].append(float(r["rating"]))
            rows["title"].append(str(r["title"]))
            rows["text"].append(str(r["text"]))
            rows["timestamp"].append(ts)
        return index[k]

    samples: dict[str, list] = {k: [] for k in schema.SAMPLES.names}
    excluded = 0
    counter: dict[str, int] = {}
    for split in SAMPLE_SPLITS:
        for n, ex in enumerate(main[split]):
            user = ex["user_id"]
            if user not in keep_users:
                continue
            where = f"{split}[{n}]"
            target = rid(user, ex["data"], where + ".data")
            t_ts = rows["timestamp"][target]
            prof = [rid(user, r, f"{where}.profile") for r in ex["profile"]]
            prof.sort(key=lambda i: rows["timestamp"][i])
            kept = [i for i in prof if rows["timestamp"][i] < t_ts]
            excluded += len(prof) - len(kept)
            if not kept:
                continue
            j = counter.get(f"{split}:{user}", 0)
            counter[f"{split}:{user}"] = j + 1
            samples["sample_id"].append(
                f"train:{user}:{j}" if split == "train" else f"{split}:{user}"
            )
            samples["split"].append(split)
            samples["user_id"].append(user)
            samples["target"].append(target)
            samples["profile"].append(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews = pa.Table.from_pydict(rows, schema=schema.REVIEWS)
    item_ids = sorted(set(rows["item_id"]))
    if meta is not None:
        m = {r["asin"]: r for r in meta if r["asin"] in set(item_ids)}
        titles = [str(m.get(i, {}).get("title") or "") for i in item_ids]
        descs = [str(m.get(i, {}).get("description") or "") for i in item_ids]
    else:
        titles = descs = [""] * len(item_ids)
    items = pa.Table.from_pydict(
        {"item_id": item_ids, "title": titles, "description": descs}, schema=schema.ITEMS
    )
    pq.write_table(reviews, out_dir / "reviews.parquet")
    pq.write_table(items, out_dir / "items.parquet")
    pq.write_table(
        pa.Table.from_pydict(samples, schema=schema.SAMPLES), out_dir / "samples.parquet"
    )
    split_counts = {s: samples["split"].count(s) for s in SAMPLE_SPLITS}
    return {
        "input_rows": len(rows["review_id"]),
        "users": len(keep_users),
        "items": len(item_ids),
        "reviews": reviews.num_rows,
        "samples": split_counts,
        "profile_reviews_excluded_same_timestamp": excluded,
    }
