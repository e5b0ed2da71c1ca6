"""The data stages: prepare -> embed -> contrast, and :class:`Data`, what they hold."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from peerdiff import methods
from peerdiff.config import RunConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.errors import MissingStageError
from peerdiff.methods.base import Context
from peerdiff.stage import Stage, fingerprint


def prepare(cfg: RunConfig) -> Stage:
    """``peerdiff prepare``: the benchmark tables (keyed on input files and protocol)."""
    from peerdiff.data.prepare import prepare as build

    return build(cfg.data, cfg.run_path, cfg.seed)


def embed(cfg: RunConfig, prep: Stage) -> Stage:
    """``peerdiff embed``: a vector for every profile review and every sample's input."""
    from peerdiff.embed import embed_benchmark

    return embed_benchmark(_bench(prep), cfg.embed, cfg.run_path, cfg.cache_dir, prep.key())


def contrast(cfg: RunConfig, prep: Stage, emb: Stage) -> Stage:
    """``peerdiff contrast``: slots and difference vectors for every sample."""
    from peerdiff.contrast import compute_contrast
    from peerdiff.embed import load_vectors

    c = cfg.contrast
    st = Stage(cfg.run_path, "contrast")
    key = fingerprint(emb.key(), asdict(c))
    if st.is_done(key):
        return st
    bench = _bench(prep)
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
        "slot_reviews": int(len(data.review_ids)),
        "peers_per_slot_review_median": (
            float(np.median(data.n_peers)) if len(data.n_peers) else 0.0
        ),
    }
    st.finish(key, {"contrast": asdict(c)}, outputs, seconds=round(seconds, 3), stats=stats)
    return st


_BENCHES: dict[tuple[str, str | None], Benchmark] = {}


def _bench(prep: Stage) -> Benchmark:
    """The benchmark of a prepare stage, loaded once per (directory, key)."""
    k = (str(prep.dir.resolve()), prep.key())
    if k not in _BENCHES:
        _BENCHES.clear()
        _BENCHES[k] = Benchmark(prep.dir)
    return _BENCHES[k]


@dataclass
class Data:
    """The data stages a run needs, and what they hold (loaded on first use)."""

    prep: Stage
    emb: Stage | None = None
    con: Stage | None = None

    @property
    def bench(self) -> Benchmark:
        return _bench(self.prep)

    @cached_property
    def vectors(self) -> np.ndarray:
        from peerdiff.embed import load_vectors

        return load_vectors(self._need(self.emb, "embed").dir)

    @cached_property
    def inputs(self) -> dict[str, np.ndarray]:
        arr = np.load(self._need(self.emb, "embed").path("inputs.npy"))
        return dict(zip([s.sample_id for s in self.bench.samples()], arr))

    @cached_property
    def contrast(self):
        from peerdiff.contrast import ContrastData

        return ContrastData.load(self._need(self.con, "contrast").dir, self.vectors)

    def keys(self, needs: frozenset[str]) -> list[str | None]:
        """The upstream keys a method with these needs depends on."""
        out = [self.prep.key()]
        if "vectors" in needs or "contrast" in needs:
            out.append(self._need(self.emb, "embed").key())
        if "contrast" in needs:
            out.append(self._need(self.con, "contrast").key())
        return out

    def context(self, cfg: RunConfig, needs: frozenset[str], count_tokens) -> Context:
        ctx = Context(self.bench, cfg.prompt, count_tokens)
        if "vectors" in needs or "contrast" in needs:
            ctx.vectors, ctx.inputs = self.vectors, self.inputs
        if "contrast" in needs:
            ctx.contrast = self.contrast
        return ctx

    @staticmethod
    def _need(st: Stage | None, name: str) -> Stage:
        if st is None:
            raise MissingStageError(f"the {name} stage has not run: `peerdiff {name}`")
        return st


def data(cfg: RunConfig, names: list[str] | None = None, prep: Stage | None = None) -> Data:
    """Run (or reuse) the data stages that ``names`` (default: ``cfg.methods``) need."""
    needs = set().union(*(methods.get(m).needs for m in names or cfg.methods))
    prep = prep or prepare(cfg)
    emb = embed(cfg, prep) if needs & {"vectors", "contrast"} else None
    con = contrast(cfg, prep, emb) if "contrast" in needs else None
    return Data(prep, emb, con)
