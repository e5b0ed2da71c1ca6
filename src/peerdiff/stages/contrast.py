"""Stage 3, ``contrast``: for each sample, its slots (the user's recent past reviews) and
their difference vectors against other users' reviews of the same items."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from peerdiff.config import RunConfig
from peerdiff.stage import Stage, fingerprint
from peerdiff.stages.prepare import benchmark


def contrast(cfg: RunConfig, prep: Stage, emb: Stage) -> Stage:
    """``peerdiff contrast``: slots and difference vectors for every sample."""
    from peerdiff.contrast import compute_contrast
    from peerdiff.embed import load_vectors

    c = cfg.contrast
    st = Stage(cfg.run_path, "contrast")
    key = fingerprint(emb.key(), asdict(c))
    if st.is_done(key):
        return st
    bench = benchmark(prep)
    t0 = time.time()
    users, items = bench.codes()
    flat, offsets = bench.profile_arrays()
    data = compute_contrast(
        load_vectors(emb.dir),
        users,
        items,
        bench.base_mask,
        flat,
        offsets,
        [s.sample_id for s in bench.samples()],
        c.max_slots,
        c.weighting,
        c.temperature,
    )
    seconds = time.time() - t0
    outputs = data.save(st.dir)
    filled = (data.slots >= 0).sum(1)
    stats = {
        "samples": len(data.sample_ids),
        "slots_per_sample_mean": round(float(filled.mean()), 2) if len(filled) else 0.0,
        "samples_with_all_slots": int((filled == c.max_slots).sum()),
        "samples_without_slots": int((filled == 0).sum()),
        "slot_reviews": len(data.review_ids),
        "peers_per_slot_review_median": (
            float(np.median(data.n_peers)) if len(data.n_peers) else 0.0
        ),
    }
    st.finish(key, {"contrast": asdict(c)}, outputs, seconds=round(seconds, 3), stats=stats)
    return st
