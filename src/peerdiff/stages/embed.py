"""Stage 2, ``embed``: the frozen sentence encoder's vector for every profile review and
every sample's input (through the shared vector cache)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from peerdiff.config import RunConfig
from peerdiff.embed import FORMAT, Encoder, VectorCache, embed_texts, input_text, review_input
from peerdiff.stage import Stage, atomic_path, fingerprint
from peerdiff.stages.prepare import benchmark


def embed(cfg: RunConfig, prep: Stage) -> Stage:
    """``peerdiff embed``: a vector for every review that appears in some profile and for
    every sample's input.

    Writes ``embed/vectors.npy`` (``(n_reviews, dim)`` float32). Rows of reviews that are in
    no profile (test targets) are NaN: no feature can use them silently. Also writes
    ``inputs.npy`` (``(n_samples, dim)``, sample order of the benchmark): each sample's
    :func:`input_text` vector.
    """
    ecfg, bench = cfg.embed, benchmark(prep)
    stage = Stage(cfg.run_path, "embed")
    settings = {k: v for k, v in asdict(ecfg).items() if k != "device"}
    key = fingerprint(prep.key(), settings, FORMAT)
    if stage.is_done(key):
        return stage
    encoder = Encoder(ecfg.model, ecfg.device, ecfg.max_length)
    cache = VectorCache(cfg.cache_dir, encoder.key, encoder.dim)
    rows = np.flatnonzero(bench.profile_mask)
    texts = [review_input(bench.titles[i], bench.texts[i], ecfg.text) for i in rows]
    vecs, counts = embed_texts(texts, encoder, cache)
    full = np.full((len(bench), encoder.dim), np.nan, dtype=np.float32)
    full[rows] = vecs
    samples = bench.samples()
    inputs, _ = embed_texts([input_text(bench, s) for s in samples], encoder, cache)
    for name, arr in (("vectors.npy", full), ("inputs.npy", inputs)):
        with atomic_path(stage.path(name)) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    stage.finish(
        key,
        {"embed": asdict(ecfg)},
        ["vectors.npy", "inputs.npy"],
        encoder={
            "name": ecfg.model,
            "path": encoder.path,
            "key": encoder.key,
            "dim": encoder.dim,
            "pooling": encoder.pooling,
        },
        counts={"embedded": len(rows), **counts},
    )
    return stage
