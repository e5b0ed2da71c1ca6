"""``peerdiff prepare`` at scale on a synthetic Amazon Reviews'23 file.

    python bench/prepare_scale.py [--sizes 1e6,1e7] [--preset small] [--keep DIR]

Writes a gzip JSONL file in the Amazon'23 schema (users and items with the bundled data's
statistics, ~300-character texts, metadata for every item), then runs ``peerdiff prepare``
with the chosen preset in a child process and reports its wall time and peak RSS. The floor
measured in the same run: decompressing and JSON-parsing the same file and nothing else.
The ``small`` preset (default) keeps ~1 user in 80 of these synthetic users, so the build
step (dedup, k-core, hold-out, samples, peers) runs at scale; with ``paper`` (18+ reviews
per user, 8+ reviewers per item) nothing survives the k-core of a graph with the bundled
data's statistics and the figure is the read alone.
Goals: 1e7 reviews stream within 24 GiB; prepare <= 2x the floor.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import review_graph

WORDS = [
    "great",
    "album",
    "song",
    "sound",
    "voice",
    "band",
    "guitar",
    "lyrics",
    "music",
    "record",
    "track",
    "love",
    "best",
    "classic",
    "beautiful",
    "production",
    "live",
    "recording",
    "favorite",
    "bass",
    "drums",
    "piano",
    "jazz",
    "rock",
    "style",
    "melody",
    "chorus",
    "rhythm",
    "tone",
    "mix",
    "fan",
    "listen",
    "heard",
    "years",
    "first",
    "time",
]


def write_files(n: int, d: Path, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    g = review_graph(n, seed)
    pool = [" ".join(rng.choice(WORDS, 55)) for _ in range(5000)]
    reviews, meta = d / f"reviews-{n}.jsonl.gz", d / f"meta-{n}.jsonl.gz"
    texts = rng.integers(0, len(pool), len(g["user"]))
    ratings = rng.integers(1, 6, len(g["user"]))
    with gzip.open(reviews, "wb", compresslevel=1) as f:
        buf = []
        for j, (u, i, t) in enumerate(
            zip(g["user"].tolist(), g["item"].tolist(), g["timestamp"].tolist())
        ):
            buf.append(
                orjson.dumps(
                    {
                        "rating": float(ratings[j]),
                        "title": f"title {texts[j] % 97}",
                        "text": f"{pool[texts[j]]} #{j}",
                        "images": [],
                        "asin": f"I{i}",
                        "parent_asin": f"I{i}",
                        "user_id": f"U{u}",
                        "timestamp": t * 1000,
                        "helpful_vote": 0,
                        "verified_purchase": True,
                    }
                )
            )
            if len(buf) == 100_000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    with gzip.open(meta, "wb", compresslevel=1) as f:
        for i in range(g["n_items"]):
            f.write(
                orjson.dumps(
                    {
                        "parent_asin": f"I{i}",
                        "title": f"Album {i}",
                        "description": [" ".join(rng.choice(WORDS, 30))],
                        "categories": ["Music"],
                        "rating_number": 10,
                    }
                )
                + b"\n"
            )
    return reviews, meta


def floor_seconds(path: Path) -> float:
    t0 = time.perf_counter()
    with gzip.open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--preset", default="small", help="data.preset for prepare")
    ap.add_argument("--keep", help="directory for the synthetic files (default: temporary)")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        for n in [int(float(x)) for x in a.sizes.split(",")]:
            t0 = time.perf_counter()
            reviews, meta = d / f"reviews-{n}.jsonl.gz", d / f"meta-{n}.jsonl.gz"
            if not (reviews.exists() and meta.exists()):  # --keep reuses earlier files
                reviews, meta = write_files(n, d)
            gen_s = time.perf_counter() - t0
            run = d / f"run-{n}-{a.preset}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [
                sys.executable,
                "-m",
                "peerdiff.cli",
                "prepare",
                f"run_dir={run}",
                f"data.reviews={reviews}",
                f"data.items={meta}",
                f"data.preset={a.preset}",
            ]
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            subprocess.run(
                cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
            )
            prep_s = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            stats = json.loads((run / "prepare" / "stats.json").read_text())
            fl = floor_seconds(reviews)
            r = {
                "reviews": n,
                "preset": a.preset,
                "file_mb": round(reviews.stat().st_size / 1e6, 1),
                "write_s": round(gen_s, 1),
                "prepare_s": round(prep_s, 1),
                "peak_rss_gib": round(max(peak, before) / 2**20, 2),
                "floor_parse_s": round(fl, 1),
                "prepare_vs_floor": round(prep_s / fl, 2),
                "us_per_review": round(1e6 * prep_s / n, 2),
                "kept": {k: stats[k] for k in ("users", "items", "reviews", "samples")},
            }
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(
        "\n| reviews | preset | gz MB | prepare s | us/review | peak RSS GiB | parse-only floor s | ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['reviews']:,} | {r['preset']} | {r['file_mb']} | {r['prepare_s']} | "
            f"{r['us_per_review']} | {r['peak_rss_gib']} | {r['floor_parse_s']} | {r['prepare_vs_floor']} |"
        )


if __name__ == "__main__":
    main()
