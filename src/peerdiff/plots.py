"""The report's figures, sized for a paper: each metric per method with its bootstrap
interval, each method minus the reference with its paired interval, who gains by profile
length, the user-swap probe, and the training curves of every trained method.

Metric figures are small multiples (one panel per metric, four to a row, the same method
order in every panel) of points with intervals on an axis zoomed to the data, the values
written above the points; every panel says which direction is better."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from peerdiff.metrics import LABELS, LOWER_IS_BETTER, format_score
from peerdiff.stage import atomic_path, read_json

RED, BLUE, GREEN, GREY = "#c44e52", "#4c72b0", "#55a868", "#8c8c8c"
COLUMNS = 4  # panels per row of a small-multiples figure
UNITS = {"nll": "nats/token"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subset(split: str) -> bool:
    """A subset run's split (``test-n10``: ``generate.max_samples=10``)."""
    return re.fullmatch(r"\w+-n\d+", split) is not None


def _save(fig, path: Path, split: str | None = None, splits: Iterable[str] = ()) -> None:
    """Write ``fig`` atomically as PNG and close it: ``<stem>-<split>.png`` for a subset
    run's split, and for every split when the report has several full ones; a full split
    alone keeps ``<stem>.png`` whatever subsets sit beside it."""
    full = [s for s in splits if not _subset(s)]
    if split is not None and (_subset(split) or len(full) > 1):
        path = path.with_name(f"{path.stem}-{split}.png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight")
    _pyplot().close(fig)


def _title(metric: str) -> str:
    """``"NLL (nats/token)\\n← lower is better"``: the arrow points to the better side."""
    unit = f" ({UNITS[metric]})" if metric in UNITS else ""
    better = "← lower is better" if metric in LOWER_IS_BETTER else "higher is better →"
    return f"{LABELS[metric]}{unit}\n{better}"


def format_signed(metric: str, v: float) -> str:
    """A difference as tables show scores, with its sign (``+0.0017``, ``-0.09``)."""
    return ("+" if v > 0 else "") + format_score(metric, v)


def _panels(n_panels: int, n_rows: int, width: float = 2.5):
    """A grid of ``n_panels`` axes, :data:`COLUMNS` to a row, sharing the y axis (one row of
    points per method, in the same order everywhere), and the unused cells, switched off.

    Returns:
        ``(figure, axes, spare)``.
    """
    plt = _pyplot()
    cols = min(COLUMNS, n_panels)
    grid_rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(
        grid_rows,
        cols,
        figsize=(width * cols + 0.8, grid_rows * (1.1 + 0.34 * n_rows)),
        sharey=True,
        squeeze=False,
    )
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.axis("off")
    return fig, flat[:n_panels], flat[n_panels:]


def _key(fig, spare: list, entries: list[tuple[str, str]]) -> None:
    """A legend of ``(colour, label)`` dots: in the first unused cell of the grid, or under
    the panels when every cell is used."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ms=5, lw=1.2) for c, _ in entries]
    labels = [label for _, label in entries]
    if spare:
        spare[0].legend(handles, labels, loc="center", frameon=False, fontsize=8)
    else:
        fig.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8
        )


def _intervals(
    ax,
    points: list[tuple[float, float, float, str]],
    labels: list[str] | None = None,
    texts: list[str] | None = None,
    zero: bool = True,
    bold: int | None = None,
) -> None:
    """One row per ``(value, low, high, colour)``: the value with its interval, ``texts``
    written above the points (``bold``: the index of one to set in bold), and a zero line;
    the x axis spans the intervals (and 0 when ``zero``), not more."""
    for y, (v, lo, hi, color) in enumerate(points):
        # a percentile interval may miss the value by a rounding error (all samples equal)
        err = [[max(v - lo, 0.0)], [max(hi - v, 0.0)]]
        ax.errorbar(v, y, xerr=err, fmt="o", color=color, ms=5, capsize=3)
    for y, ((v, *_), text) in enumerate(zip(points, texts or [])):
        ax.annotate(
            text,
            (v, y),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            fontweight="bold" if y == bold else "normal",
        )
    ends = [x for p in points for x in p[:3] if np.isfinite(x)] + ([0.0] if zero else [])
    lo, hi = min(ends, default=0.0), max(ends, default=1.0)
    pad = 0.12 * (hi - lo) or 0.05 * max(abs(hi), 1e-9)
    ax.set_xlim(lo - pad, hi + pad)
    if zero:
        ax.axvline(0, color="grey", lw=0.8)
    if labels is not None:
        ax.set_yticks(range(len(points)), labels, fontsize=8)
    ax.set_ylim(len(points) - 0.5, -0.7)  # first row on top, room for its text
    ax.xaxis.set_major_locator(_pyplot().MaxNLocator(4))
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def plot_metrics(report: dict[str, Any], path: Path) -> None:
    """One panel per metric: each method's score with its bootstrap 95% interval (the
    reference in red, the best value in bold)."""
    plt = _pyplot()
    for split, s in report["splits"].items():
        metrics, rows = s["metrics"], s["rows"]
        names = [r["method"] for r in rows]
        fig, axes, spare = _panels(len(metrics), len(rows))
        for ax, m in zip(axes, metrics):
            v = [r["scores"][m]["value"] for r in rows]
            finite = [x for x in v if np.isfinite(x)]
            best = v.index((min if m in LOWER_IS_BETTER else max)(finite)) if finite else None
            _intervals(
                ax,
                [
                    (x, *r["scores"][m]["ci"], RED if n == s["reference"] else BLUE)
                    for x, r, n in zip(v, rows, names)
                ],
                names,
                [format_score(m, x) for x in v],
                zero=False,
                bold=best,
            )
            ax.set_title(_title(m), fontsize=9)
        ns = sorted({r["n"] for r in rows})
        fig.suptitle(
            f"{split} split (n={'/'.join(map(str, ns))}): score with its bootstrap 95% "
            "interval, best value in bold",
            fontsize=9,
        )
        _key(fig, spare, [(RED, f"{s['reference']} (the reference)"), (BLUE, "other methods")])
        fig.tight_layout()
        plt.subplots_adjust(hspace=0.55)
        _save(fig, path, split, report["splits"])


def plot_paired(report: dict[str, Any], path: Path) -> None:
    """Each method minus the reference, one panel per metric, with the paired bootstrap 95%
    interval: green where the method is better (the interval excludes 0 on its better side),
    red where the reference is, grey where the interval crosses 0 (no difference)."""
    plt = _pyplot()
    for split, s in report["splits"].items():
        ref = s["reference"]
        rows = [r for r in s["rows"] if r["method"] != ref]
        metrics = [m for m in s["metrics"] if any(r["scores"][m].get("vs_reference") for r in rows)]
        if not rows or not metrics:
            continue
        fig, axes, spare = _panels(len(metrics), len(rows))
        for ax, m in zip(axes, metrics):
            sign = -1 if m in LOWER_IS_BETTER else 1  # > 0 after it: the method is better
            diffs = [r["scores"][m].get("vs_reference") for r in rows]
            points = []
            for d in diffs:
                if not d:
                    points.append((np.nan, np.nan, np.nan, GREY))
                    continue
                lo, hi = sorted(sign * x for x in d["ci"])
                color = GREEN if lo > 0 else RED if hi < 0 else GREY
                points.append((d["diff"], *d["ci"], color))
            _intervals(
                ax,
                points,
                [r["method"] for r in rows],
                ["" if not d else format_signed(m, d["diff"]) for d in diffs],
            )
            ax.set_title(f"{LABELS[m]}{f' ({UNITS[m]})' if m in UNITS else ''}", fontsize=9)
            left, right = (f"{ref} better", "method better")[::sign]
            ax.set_xlabel(f"← {left}  |  {right} →", fontsize=7)
        fig.suptitle(
            f"{split} split: each method minus {ref}, with the paired bootstrap 95% interval",
            fontsize=9,
        )
        _key(
            fig,
            spare,
            [
                (GREEN, "method better (excludes 0)"),
                (RED, f"{ref} better (excludes 0)"),
                (GREY, "no difference (includes 0)"),
            ],
        )
        fig.tight_layout()
        plt.subplots_adjust(hspace=0.6)
        _save(fig, path, split, report["splits"])


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
        _save(fig, path, split, splits)


def plot_probe(probes: list[dict[str, Any]], path: Path) -> None:
    """The user-swap probe: mean NLL with donors' features minus with the user's own, per
    method and split, with its bootstrap 95% interval (above 0: the user's own are better)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 1.3 + 0.45 * len(probes)))
    _intervals(
        ax,
        [
            (
                p["delta"],
                *p["delta_ci"],
                GREEN if p["delta_ci"][0] > 0 else RED if p["delta_ci"][1] < 0 else GREY,
            )
            for p in probes
        ],
        [
            f"{p['method']} ({p['split']})\nn={p['n']}, own best {100 * p['own_best_share']:.0f}%"
            for p in probes
        ],
        [f"{p['delta']:+.4f}" for p in probes],
    )
    ax.set_xlabel(
        "donors' NLL minus own NLL (nats/token)\nhigher is better →: the soft tokens carry the user",
        fontsize=8,
    )
    ax.set_title(
        "user-swap probe, bootstrap 95% interval\n"
        "green: own features better, red: donors' better, grey: includes 0",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path)


def _training_curves(train_dir: Path) -> dict[str, Any]:
    """One trained method's batch log, epochs and validation metric, read from its files.
    A validation NLL (recorded as ``neg_nll``, higher is better) is turned back into NLL."""
    log = [
        orjson.loads(line) for line in (train_dir / "log.jsonl").read_bytes().splitlines() if line
    ]
    state = read_json(train_dir / "state.json")
    manifest = (
        read_json(train_dir / "manifest.json") if (train_dir / "manifest.json").exists() else {}
    )
    metric = manifest.get("val_metric", "meteor")
    epochs = state.get("epochs") or []
    val = np.array([e.get("val_score", np.nan) for e in epochs], dtype=float)
    if metric == "neg_nll":
        metric, val = "NLL (nats/token)", -val
    else:
        metric = LABELS.get(metric, metric)
    # each batch at its place in the run, in epochs: epoch 1's last batch at 1.0
    per_epoch: dict[int, int] = {}
    for r in log:
        per_epoch[r["epoch"]] = per_epoch.get(r["epoch"], 0) + 1
    seen: dict[int, int] = {}
    x = []
    for r in log:
        seen[r["epoch"]] = seen.get(r["epoch"], 0) + 1
        x.append(r["epoch"] - 1 + seen[r["epoch"]] / per_epoch[r["epoch"]])
    return {
        "method": train_dir.name,
        "x": np.array(x),
        "lm": np.array([r.get("lm", r.get("loss", np.nan)) for r in log], dtype=float),
        "epochs": [e["epoch"] for e in epochs],
        "val": val,
        "metric": metric,
        "lower_is_better": metric.startswith("NLL"),
        "best_epoch": state.get("best_epoch"),
    }


def plot_training(train_dirs: list[Path], path: Path) -> None:
    """Training curves of every trained method of a run (DEP beside its controls): the LM
    loss per batch (moving average over about a tenth of the run) and the validation score
    per epoch, the selected epoch starred; one validation panel per validation metric.

    Args:
        train_dirs: ``train/<method>/`` directories with ``log.jsonl`` and ``state.json``,
            in the order the legend lists them.
    """
    plt = _pyplot()
    runs = [_training_curves(d) for d in train_dirs]
    colors = {r["method"]: f"C{i % 10}" for i, r in enumerate(runs)}
    val_metrics = list(dict.fromkeys(r["metric"] for r in runs))
    fig, axes = plt.subplots(
        1, 1 + len(val_metrics), figsize=(4.4 * (1 + len(val_metrics)), 3.4), squeeze=False
    )
    a, *vals = axes[0]
    w = max(1, max(len(r["lm"]) for r in runs) // 10)
    for r in runs:
        y = r["lm"]
        k = min(w, len(y))
        smooth = np.convolve(y, np.ones(k) / k, mode="valid") if k else y
        a.plot(
            r["x"][k - 1 :],
            smooth,
            color=colors[r["method"]],
            lw=1.4,
            marker="o" if len(smooth) == 1 else None,  # a one-batch log is a point
            label=r["method"],
        )
    for e in range(1, max((len(r["epochs"]) for r in runs), default=0)):
        a.axvline(e, color="grey", ls=":", lw=0.8)
    a.set_xlabel("epoch")
    a.set_ylabel("LM loss (nats/token)\n← lower is better", fontsize=8)
    a.set_title(f"training LM loss (mean of {w} batches)", fontsize=9)
    a.grid(alpha=0.3)
    for b, metric in zip(vals, val_metrics):
        lower = next(r["lower_is_better"] for r in runs if r["metric"] == metric)
        for r in runs:
            if r["metric"] != metric or not r["epochs"]:
                continue
            label = r["method"]
            if r["best_epoch"] in r["epochs"]:
                i = r["epochs"].index(r["best_epoch"])
                b.plot(
                    [r["best_epoch"]], [r["val"][i]], "*", color=colors[r["method"]], ms=14, mec="k"
                )
                label += f" (★ {r['val'][i]:.4f})"
            b.plot(r["epochs"], r["val"], "o-", color=colors[r["method"]], label=label)
        ep = sorted({e for r in runs for e in r["epochs"]})
        b.set_xticks(ep)
        if ep:
            b.set_xlim(ep[0] - 0.3, ep[-1] + 0.3)
        b.set_xlabel("epoch")
        better = "← lower is better" if lower else "higher is better →"
        b.set_ylabel(f"validation {metric}\n{better}", fontsize=8)
        b.set_title(f"validation {metric.split(' ')[0]} per epoch (★ selected)", fontsize=9)
        b.grid(alpha=0.3)
    for ax in (*vals, a):  # one legend: beside the selected values, else on the losses
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    fig.tight_layout()
    _save(fig, path)
