"""The report's figures: metric values with intervals per method, paired differences from
the reference method, the user-swap probe, and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from peerdiff.metrics import LABELS
from peerdiff.stage import atomic_path, read_json

RED, BLUE = "#c44e52", "#4c72b0"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, split: str | None = None, n_splits: int = 1) -> None:
    """Write ``fig`` atomically as PNG (``<stem>-<split>.png`` when a report has several
    splits) and close it."""
    if split is not None and n_splits > 1:
        path = path.with_name(f"{path.stem}-{split}.png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)


def _intervals(ax, points: list[tuple[float, float, float, bool]], labels: list[str]) -> None:
    """One row per ``(value, low, high, red)``: the value with its interval, and a zero line."""
    for y, (v, lo, hi, red) in enumerate(points):
        ax.errorbar(v, y, xerr=[[v - lo], [hi - v]], fmt="o", color=RED if red else BLUE, capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(points)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)


def plot_metrics(report: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    for split, s in report["splits"].items():
        metrics, rows = s["metrics"], s["rows"]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
        names = [r["method"] for r in rows]
        for ax, m in zip(axes[0], metrics):
            v = np.array([r["scores"][m]["value"] for r in rows])
            lo = np.array([r["scores"][m]["ci"][0] for r in rows])
            hi = np.array([r["scores"][m]["ci"][1] for r in rows])
            colors = [RED if n == s["reference"] else BLUE for n in names]
            ax.bar(range(len(rows)), v, yerr=[v - lo, hi - v], color=colors, capsize=3)
            ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
            ax.set_title(LABELS[m])
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{split} split: score and bootstrap 95% interval (reference in red)")
        fig.tight_layout()
        _save(fig, path, split, len(report["splits"]))


def plot_paired(report: dict[str, Any], path: Path) -> None:
    """Each method minus the reference, per metric, with the paired bootstrap 95% interval.

    The comparison the tables make: an interval that crosses the zero line is no difference.
    """
    plt = _pyplot()
    for split, s in report["splits"].items():
        rows = [r for r in s["rows"] if r["method"] != s["reference"]]
        metrics = [m for m in s["metrics"] if any(r["scores"][m].get("vs_reference") for r in rows)]
        if not rows or not metrics:
            continue
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(3.0 * len(metrics), 0.9 + 0.35 * len(rows)), squeeze=False
        )
        for ax, m in zip(axes[0], metrics):
            shown = [(r["method"], r["scores"][m].get("vs_reference")) for r in rows]
            shown = [(name, d) for name, d in shown if d]
            points = [(d["diff"], *d["ci"], d["ci"][0] > 0 or d["ci"][1] < 0) for _, d in shown]
            _intervals(ax, points, [name for name, _ in shown])
            ax.set_title(LABELS[m], fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
            ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        fig.suptitle(
            f"{split} split: method minus {s['reference']}, paired bootstrap 95% interval "
            "(red: excludes 0)",
            fontsize=9,
        )
        fig.tight_layout()
        _save(fig, path, split, len(report["splits"]))


def plot_gains(report: dict[str, Any], path: Path) -> None:
    """Who gains: each method's target NLL minus the reference's per profile-length bucket,
    with paired 95% intervals (above 0: the reference is better for those users)."""
    plt = _pyplot()
    splits = {k: s["gains"] for k, s in report["splits"].items() if s.get("gains")}
    for split, g in splits.items():
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        methods = list(dict.fromkeys(r["method"] for r in g["rows"]))
        labels = [f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in g["buckets"]]
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            rows = [r for r in g["rows"] if r["method"] == m]
            x = (
                np.array([g["buckets"].index(r["bucket"]) for r in rows])
                + (j - 0.5 * (len(methods) - 1)) * width
            )
            d = np.array([r["diff"] for r in rows])
            lo = np.array([r["ci"][0] for r in rows])
            hi = np.array([r["ci"][1] for r in rows])
            ax.errorbar(x, d, yerr=[d - lo, hi - d], fmt="o", capsize=3, label=m)
        ax.axhline(0, color="grey", lw=0.8)
        ns = {tuple(b): n for b, n in zip(g["buckets"], g.get("counts", []))}
        ax.set_xticks(
            range(len(labels)),
            [f"{lab}\n(n={ns.get(tuple(b), 0)})" for lab, b in zip(labels, g["buckets"])],
        )
        ax.set_xlabel("user's earlier reviews (profile length)")
        ax.set_ylabel(f"NLL minus {g['reference']} (nats/token)")
        ax.set_title(
            f"{split}: who gains from {g['reference']} (above 0: {g['reference']} better), 95% CI",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        _save(fig, path, split, len(splits))


def plot_probe(probes: list[dict[str, Any]], path: Path) -> None:
    """The user-swap probe: mean NLL with donors' features minus with the user's own, per
    method and split, with its bootstrap 95% interval (above 0: the user's own are better)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.4 * len(probes)))
    _intervals(
        ax,
        [(p["delta"], *p["delta_ci"], p["delta_ci"][0] > 0) for p in probes],
        [
            f"{p['method']} ({p['split']}, n={p['n']}, own best {100 * p['own_best_share']:.0f}%)"
            for p in probes
        ],
    )
    ax.set_xlabel("donors' NLL minus own NLL (nats/token)")
    ax.set_title("user-swap probe, 95% interval (red: own features better)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_training(train_dir: Path, path: Path) -> None:
    plt = _pyplot()
    log = [
        orjson.loads(line) for line in (train_dir / "log.jsonl").read_bytes().splitlines() if line
    ]
    state = read_json(train_dir / "state.json")
    manifest = (
        read_json(train_dir / "manifest.json") if (train_dir / "manifest.json").exists() else {}
    )
    metric = manifest.get("val_metric", "meteor")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(log))
    for key, label in (("loss", "total loss"), ("lm", "LM loss")):
        y = np.array([r.get(key, np.nan) for r in log], dtype=float)
        a.plot(x, y, alpha=0.3, lw=0.8)
        w = min(50, max(1, len(y) // 10))  # moving average over about a tenth of the run
        if len(y) >= w:
            a.plot(
                x[w - 1 :],
                np.convolve(y, np.ones(w) / w, mode="valid"),
                label=f"{label} (mean of {w})",
            )
    ends = np.cumsum([sum(1 for r in log if r["epoch"] == e["epoch"]) for e in state["epochs"]])
    for e in ends[:-1]:
        a.axvline(e - 0.5, color="grey", ls=":", lw=0.8)
    a.set_xlabel("batch")
    a.set_ylabel("loss")
    a.set_title(f"{train_dir.name}: training loss")
    a.legend(fontsize=8)
    ep = [e["epoch"] for e in state["epochs"]]
    b.plot(ep, [e["val_score"] for e in state["epochs"]], "o-")
    if "best_epoch" in state:
        best = next(e for e in state["epochs"] if e["epoch"] == state["best_epoch"])
        b.plot([best["epoch"]], [best["val_score"]], "r*", ms=14, label="selected")
        b.legend(fontsize=8)
    b.set_xticks(ep)
    b.set_xlabel("epoch")
    b.set_ylabel(f"validation {metric}")
    b.set_title(f"{train_dir.name}: validation {metric} per epoch")
    b.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
