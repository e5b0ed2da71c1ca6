"""Contrast stage at scale: vectorized arrays vs a straightforward per-user/per-peer loop.

    python bench/contrast.py [--sizes 1e4,3e4,1e5,3e5,1e6] [--loop-max 1e5]

Each size runs in a fresh process (so peak memory is that size's own) on a synthetic review
graph with the bundled data's statistics and 384-d vectors read from a memory-mapped file,
as the embed stage stores them. The loop baseline (the DEP code's structure: for each
sample, for each recent review, for each peer) runs up to ``--loop-max`` reviews on the
same data, and its difference vectors are checked against the vectorized ones.
Goal: >= 50x faster than the loop, 1e6 reviews in <= 60 s and <= 4 GiB peak, linear growth.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def loop_contrast(vec, user, item, is_base, flat, offsets, k=8):
    """Per sample, per recent review, per peer, in Python (reference structure)."""
    by_item: dict[int, list[int]] = {}
    for r in np.flatnonzero(is_base).tolist():
        by_item.setdefault(int(item[r]), []).append(r)
    rows_of: dict[int, list[int]] = {}
    for r in np.flatnonzero(is_base).tolist():
        rows_of.setdefault(int(user[r]), []).append(r)
    mean = {u: vec[rows].mean(0) for u, rows in rows_of.items()}
    out = {}
    for s in range(len(offsets) - 1):
        prof = flat[offsets[s] : offsets[s + 1]][::-1]
        got = 0
        for r in prof.tolist():
            u = int(user[r])
            peers = [p for p in by_item.get(int(item[r]), []) if int(user[p]) != u]
            if not peers:
                continue
            if r not in out:
                d = np.array([np.linalg.norm(mean[u] - mean[int(user[p])]) for p in peers])
                w = np.exp(d / d.sum()) if d.sum() > 0 else np.ones(len(d))
                w = w / w.sum()
                out[r] = sum(wi * (vec[r] - vec[p]) for wi, p in zip(w, peers))
            got += 1
            if got == k:
                break
    return out


def run_one(n: int, loop_max: int, workdir: Path) -> dict:
    """Runs in a child process: build the graph, time both implementations."""
    from synthetic import review_graph, samples_for, vectors_file

    from peerdiff.contrast import compute_contrast

    g = review_graph(n)
    is_base, flat, offsets, ids = samples_for(g)
    vpath = vectors_file(workdir / f"vec-{n}.npy", len(g["user"]))
    vec = np.load(vpath, mmap_mode="r")
    # warm-up for both implementations: vectors in the page cache, one-time library set-up
    # (threadpoolctl's first library scan, lazy imports) done on a tiny graph
    float(np.asarray(vec[:, 0]).sum())
    w = review_graph(2000)
    wb, wf, wo, wi = samples_for(w)
    compute_contrast(vec[: len(w["user"])], w["user"], w["item"], wb, wf, wo, wi)
    t0 = time.perf_counter()
    data = compute_contrast(vec, g["user"], g["item"], is_base, flat, offsets, ids)
    fast = time.perf_counter() - t0
    res = {
        "reviews": len(g["user"]),
        "users": int(g["n_users"]),
        "items": int(g["n_items"]),
        "samples": len(ids),
        "slot_reviews": len(data.review_ids),
        "vectorized_s": round(fast, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if n <= loop_max:
        t0 = time.perf_counter()
        ref = loop_contrast(vec, g["user"], g["item"], is_base, flat, offsets)
        res["loop_s"] = round(time.perf_counter() - t0, 3)
        res["speedup"] = round(res["loop_s"] / fast, 1)
        got = {int(r): data.diff[i] for i, r in enumerate(data.review_ids)}
        assert set(ref) == set(got), "the two implementations chose different slot reviews"
        err = max(float(np.abs(ref[r] - got[r]).max()) for r in ref) if ref else 0.0
        res["max_abs_difference"] = err
        assert err < 1e-4, err
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e4,3e4,1e5,3e5,1e6")
    ap.add_argument("--loop-max", default="1e5")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    loop_max = int(float(a.loop_max))
    if a.child:
        print(json.dumps(run_one(a.child, loop_max, Path(a.workdir))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as wd:
        for n in [int(float(x)) for x in a.sizes.split(",")]:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(n),
                    "--workdir",
                    wd,
                    "--loop-max",
                    str(loop_max),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(json.dumps(r), flush=True)
    print("\n| reviews | samples | vectorized s | us/review | peak RSS GiB | loop s | speedup |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['reviews']:,} | {r['samples']:,} | {r['vectorized_s']:.3f} | "
            f"{1e6 * r['vectorized_s'] / r['reviews']:.2f} | {r['peak_rss_gib']:.2f} | "
            f"{r.get('loop_s', '')} | {r.get('speedup', '')} |"
        )


if __name__ == "__main__":
    main()
