"""DPL-main (the DPL paper's Amazon benchmark, saved with ``datasets``) as the canonical
benchmark tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from peerdiff.config import DataConfig
from peerdiff.data import schema
from peerdiff.data.build import SAMPLE_SPLITS
from peerdiff.data.readers import require_input
from peerdiff.errors import DataError, DependencyError


def load_dpl(data: DataConfig) -> tuple[Any, Any]:
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
    main_path = require_input(main_path, "reviews", data)
    if data.category and (main_path / data.category).exists():
        main_path = main_path / data.category
    main = datasets.load_from_disk(str(main_path))
    meta = None
    if meta_path is not None:
        meta_path = require_input(meta_path, "items", data)
        if data.category and (meta_path / data.category).exists():
            meta_path = meta_path / data.category
        meta = datasets.load_from_disk(str(meta_path))
        if isinstance(meta, datasets.DatasetDict):
            meta = meta["full"]
    return main, meta


def prepare_dpl(data: DataConfig, out_dir: Path, seed: int) -> dict[str, Any]:
    """Convert DPL-main (train/val/test of user_id, profile, data) into the canonical tables."""
    import numpy as np

    main, meta = load_dpl(data)
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
