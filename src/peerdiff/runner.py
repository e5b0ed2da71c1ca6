"""``peerdiff run``: the stage graph end to end, a timing per stage, the results table.

The graph, in order: prepare -> embed -> contrast (as the methods need them), then per
method: train (soft-prompt methods) -> generate -> likelihood -> evaluate per split, and
the swap probe for methods with user features. Every stage is skipped when its manifest
matches, so a re-run only prints the table.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import yaml
from rich.table import Table

from peerdiff import methods, stages
from peerdiff.backends import Backends
from peerdiff.config import RunConfig
from peerdiff.stage import Stage, atomic_path, read_json, write_json
from peerdiff.stages.common import run_name, split_name
from peerdiff.stages.prepare import benchmark
from peerdiff.tables import (
    console,
    llm_note,
    print_stats,
    probe_table,
    results_table,
    write_results,
)


class Timings:
    """Wall time per stage, in the order stages ran."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            self.rows.append((name, time.time() - t0))

    def table(self, title: str = "time per stage") -> Table:
        t = Table(title=title)
        t.add_column("stage")
        t.add_column("seconds", justify="right")
        for name, s in self.rows:
            t.add_row(name, f"{s:.1f}")
        t.add_row("total", f"{sum(s for _, s in self.rows):.1f}", style="bold")
        return t

    def as_dict(self) -> dict[str, Any]:
        return {
            "stages": [{"stage": n, "seconds": round(s, 2)} for n, s in self.rows],
            "total_seconds": round(sum(s for _, s in self.rows), 2),
        }


def evaluate_split(
    cfg: RunConfig,
    name: str,
    split: str,
    data: stages.Data,
    backends: Backends,
    adapter: Stage | None = None,
    t: Timings | None = None,
) -> dict[str, Any]:
    """generate -> likelihood -> evaluate of one method on one split (each skipped when
    done); the evaluation summary (a results row)."""
    t = t or Timings()
    tag = split_name(cfg, data.bench, split)  # test, or test-n10 for a subset
    with t(f"generate {name}-{tag}"):
        gen = stages.generate(cfg, name, split, data, backends, adapter)
    with t(f"nll {name}-{tag}"):
        nll = None
        if cfg.evaluate.nll:
            nll = stages.likelihood(cfg, name, split, data, backends, adapter, gen)
    with t(f"evaluate {name}-{tag}"):
        ev = stages.evaluate(cfg, name, split, gen, nll, data, backends)
    return read_json(ev.path("summary.json"))


def run(
    cfg: RunConfig, names: list[str] | None = None, backends: Backends | None = None
) -> list[dict[str, Any]]:
    """Every stage the configured methods need; returns the results rows (one per method and
    split: ``{"method", "split", "n", "scores": {metric: value}, ...}``).

    A subset run (``generate.max_samples`` below a split's size) shares the run directory's
    data, adapters and probe, and writes its predictions, scores and files under names of
    its own (``generate/<method>-test-n10``, ``results-<name>-n10.md``,
    ``config-<name>-n10.yaml``): it never rewrites a full run's outputs.

    Args:
        backends: already loaded backends (default: created from ``cfg``, loaded on use).
    """
    names = names or cfg.methods
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    t = Timings()
    with t("prepare"):
        prep = stages.prepare(cfg)
    label = run_name(cfg, benchmark(prep))
    config = "config.yaml" if label == cfg.name else f"config-{label}.yaml"
    with atomic_path(cfg.run_path / config) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    print_stats(read_json(prep.path("stats.json")))
    with t("embed + contrast"):
        data = stages.data(cfg, names, prep)
    stages.check_loggers_for(cfg, names, data)  # before a method generates for minutes
    backends = backends or Backends(cfg)
    rows, probes = [], []
    for name in names:
        adapter = None
        if methods.get(name).soft:
            with t(f"train {name}"):
                adapter = stages.train(cfg, name, data, backends)
        for split in cfg.generate.splits:
            rows.append(evaluate_split(cfg, name, split, data, backends, adapter, t))
        if methods.get(name).user_features:
            for split in cfg.probe.splits:
                with t(f"probe {name}-{split}"):
                    probes.append(
                        read_json(
                            stages.probe(cfg, name, split, data, backends, adapter).path(
                                "summary.json"
                            )
                        )
                    )
    llm = llm_note(cfg.to_dict())
    write_results(cfg.run_path, rows, label, llm)
    from peerdiff.hub import write_model_card

    for name in names:  # model cards now carry this run's metrics and probe results
        if methods.get(name).soft:
            write_model_card(cfg.run_path, name)
    console.print(results_table(rows, title=f"{label}: results", note=llm))
    if probes:
        console.print(probe_table(probes))
    for note in sorted({n for r in rows for n in r.get("notes", [])}):
        console.print(f"[dim]note: {note}[/dim]")
    console.print(t.table())
    write_json(cfg.run_path / f"timings-{label}.json", t.as_dict())
    return rows
