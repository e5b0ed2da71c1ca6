"""What the data stages (prepare -> embed -> contrast) hold, for the stages after them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from peerdiff import methods
from peerdiff.config import RunConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.errors import MissingStageError
from peerdiff.methods.base import Context
from peerdiff.stage import Stage
from peerdiff.stages.contrast import contrast
from peerdiff.stages.embed import embed
from peerdiff.stages.prepare import benchmark, prepare


@dataclass
class Data:
    """The data stages a run needs, and what they hold (loaded on first use)."""

    prep: Stage
    emb: Stage | None = None
    con: Stage | None = None

    @property
    def bench(self) -> Benchmark:
        return benchmark(self.prep)

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
