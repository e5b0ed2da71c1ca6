"""``peerdiff run``: the stage graph end to end, a timing per stage, the results table.

The graph, in order: prepare -> embed -> contrast (as the methods need them), then per
method: train (soft-prompt methods) -> generate -> likelihood -> evaluate per split, and
the swap probe for methods with user features. Every stage is skipped when its manifest
matches, so a re-run only prints the table.
"""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from peerdiff import methods, stages
from peerdiff.backends import Backends
from peerdiff.config import RunConfig
from peerdiff.metrics import LABELS, METRICS, OPTIONAL_METRICS, format_score
from peerdiff.stage import atomic_path, read_json, write_json

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


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


def has_user_features(name: str, cfg: RunConfig) -> bool:
    """Soft-prompt methods whose adapter reads user features (the swap probe applies)."""
    spec = methods.get(name)
    return spec.soft and spec.build(cfg).kind in ("dep", "pplug") and name != "dep-mean"


def run(
    cfg: RunConfig, names: list[str] | None = None, backends: Backends | None = None
) -> list[dict[str, Any]]:
    """Every stage the configured methods need; returns the results rows (one per method and
    split: ``{"method", "split", "n", "scores": {metric: value}, ...}``).

    Args:
        backends: already loaded backends (default: created from ``cfg``, loaded on use).
    """
    names = names or cfg.methods
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    with atomic_path(cfg.run_path / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    t = Timings()
    with t("prepare"):
        prep = stages.prepare(cfg)
    print_stats(read_json(prep.path("stats.json")))
    with t("embed + contrast"):
        data = stages.data(cfg, names, prep)
    backends = backends or Backends(cfg)
    rows, probes = [], []
    for name in names:
        adapter = None
        if methods.get(name).soft:
            with t(f"train {name}"):
                adapter = stages.train(cfg, name, data, backends)
        for split in cfg.generate.splits:
            with t(f"generate {name}-{split}"):
                gen = stages.generate(cfg, name, split, data, backends, adapter)
            with t(f"nll {name}-{split}"):
                nll = (
                    stages.likelihood(cfg, name, split, data, backends, adapter)
                    if cfg.evaluate.nll
                    else None
                )
            with t(f"evaluate {name}-{split}"):
                ev = stages.evaluate(cfg, name, split, gen, nll, data, backends)
            rows.append(read_json(ev.path("summary.json")))
        if has_user_features(name, cfg):
            for split in cfg.probe.splits:
                with t(f"probe {name}-{split}"):
                    probes.append(
                        read_json(
                            stages.probe(cfg, name, split, data, backends, adapter).path(
                                "summary.json"
                            )
                        )
                    )
    write_results(cfg.run_path, rows, cfg.name)
    from peerdiff.hub import write_model_card

    for name in names:  # model cards now carry this run's metrics and probe results
        if methods.get(name).soft:
            write_model_card(cfg.run_path, name)
    console.print(results_table(rows, title=f"{cfg.name}: results"))
    if probes:
        console.print(probe_table(probes))
    for note in sorted({n for r in rows for n in r.get("notes", [])}):
        console.print(f"[dim]note: {note}[/dim]")
    console.print(t.table())
    write_json(cfg.run_path / f"timings-{cfg.name}.json", t.as_dict())
    return rows


# ----------------------------------------------------------------------------- output


def print_stats(stats: dict[str, Any]) -> None:
    t = Table(title="benchmark", show_header=False)
    t.add_row("users", str(stats["users"]))
    t.add_row("items", str(stats["items"]))
    t.add_row("reviews", str(stats["reviews"]))
    t.add_row("samples", ", ".join(f"{k} {v}" for k, v in stats["samples"].items()))
    if "profile_length" in stats:
        pl = stats["profile_length"]
        t.add_row("profile length", f"median {pl['median']}, mean {pl['mean']}, max {pl['max']}")
        pr = stats["peers_per_profile_review"]
        t.add_row(
            "peers per profile review",
            f"median {pr['median']}, mean {pr['mean']}, with >=1 peer {pr['share_with_peer']:.0%}",
        )
        for reason, n in stats.get("dropped_reviews", {}).items():
            t.add_row(f"dropped: {reason}", str(n))
    for what, read in (stats.get("read") or {}).items():  # lines skipped as bad on reading
        for reason, n in (read.get("skipped") or {}).items():
            t.add_row(f"skipped {what} lines: {reason}", str(n))
        for example in (read.get("examples") or [])[:3]:
            t.add_row("  e.g.", example)
    console.print(t)


def shown_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The standard metrics plus optional ones (NLL, perplexity, the judge) some row has."""
    extra = [m for m in OPTIONAL_METRICS if any(r["scores"].get(m) is not None for r in rows)]
    return [*METRICS, *extra]


def results_table(rows: list[dict[str, Any]], title: str = "results") -> Table:
    metrics = shown_metrics(rows)
    t = Table(title=title)
    for col in ("method", "split", "n"):
        t.add_column(col, justify="right" if col == "n" else "left")
    for m in metrics:
        t.add_column(LABELS[m], justify="right")
    t.add_column("gen s", justify="right")
    for r in rows:
        secs = r.get("generation_seconds")
        t.add_row(
            r["method"],
            r["split"],
            str(r["n"]),
            *[format_score(m, r["scores"].get(m)) for m in metrics],
            "" if secs is None else f"{secs:.0f}",
        )
    return t


def probe_table(summaries: list[dict[str, Any]]) -> Table:
    t = Table(title="user-swap probe: NLL with other users' features minus own (nats/token)")
    for col in ("method", "split", "n", "delta", "95% CI", "own best", "own rank (chance)"):
        t.add_column(col, justify="left" if col in ("method", "split") else "right")
    for s in summaries:
        if not s.get("n"):
            continue
        lo, hi = s["delta_ci"]
        t.add_row(
            s["method"],
            s["split"],
            str(s["n"]),
            f"{s['delta']:+.4f}",
            f"[{lo:+.4f}, {hi:+.4f}]",
            f"{s['own_best_share']:.0%}",
            f"{s['own_rank_mean']:.2f} ({s['chance_rank']:.1f})",
        )
    return t


def write_results(run_dir: Path, rows: list[dict[str, Any]], name: str) -> None:
    """``results-<name>.{json,csv,md}`` in the run directory."""
    from peerdiff.report import markdown_table

    metrics = shown_metrics(rows)
    write_json(run_dir / f"results-{name}.json", rows)
    with atomic_path(run_dir / f"results-{name}.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "split", "n", *metrics, "generation_seconds"])
        for r in rows:
            w.writerow(
                [
                    r["method"],
                    r["split"],
                    r["n"],
                    *[r["scores"].get(m) for m in metrics],
                    r.get("generation_seconds"),
                ]
            )
    table = markdown_table(
        ["method", "split", "n", *[LABELS[m] for m in metrics], "time (s)"],
        [
            [
                r["method"],
                r["split"],
                r["n"],
                *[format_score(m, r["scores"].get(m)) for m in metrics],
                "" if r.get("generation_seconds") is None else f"{r['generation_seconds']:.0f}",
            ]
            for r in rows
        ],
    )
    with atomic_path(run_dir / f"results-{name}.md") as tmp:
        tmp.write_text(table)


def print_dry_run(cfg: RunConfig, names: list[str] | None = None) -> dict[str, Any]:
    """``peerdiff run --dry-run``: prompt lengths and budgets per method and step, and the
    deviations from the published profile; nothing is generated."""
    from peerdiff.paper import dry_run

    out = dry_run(cfg, names)
    t = Table(title=f"{cfg.name}: dry run (tokens: {out['tokenizer']})")
    for col in (
        "method",
        "step",
        "role",
        "prompts",
        "min",
        "median",
        "max",
        "over budget",
        "new tokens",
    ):
        t.add_column(col, justify="left" if col in ("method", "step", "role") else "right")
    for name, steps in out["methods"].items():
        for step, v in steps.items():
            t.add_row(
                name,
                step,
                v["role"],
                str(v["prompts"]),
                str(v["tokens_min"]),
                f"{v['tokens_median']:.0f}",
                str(v["tokens_max"]),
                f"{v['over_budget']} (> {v.get('limit', cfg.prompt.max_prompt_tokens)})",
                str(v["max_new_tokens"]),
            )
    console.print(t)
    devs = out["deviations"]
    console.print("deviations from the published profile: " + ("; ".join(devs) if devs else "none"))
    write_json(cfg.run_path / f"dry-run-{cfg.name}.json", out)
    return out
