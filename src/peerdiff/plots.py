"""The report's figures: metric values with intervals per method, and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from peerdiff.metrics import LABELS
from peerdiff.stage import atomic_path, read_json


def plot_metrics(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for split, s in report["splits"].items():
        metrics, rows = s["metrics"], s["rows"]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
        names = [r["method"] for r in rows]
        for ax, m in zip(axes[0], metrics):
            v = np.array([r["scores"][m]["value"] for r in rows])
            lo = np.array([r["scores"][m]["ci"][0] for r in rows])
            hi = np.array([r["scores"][m]["ci"][1] for r in rows])
            colors = ["#c44e52" if n == s["reference"] else "#4c72b0" for n in names]
            ax.bar(range(len(rows)), v, yerr=[v - lo, hi - v], color=colors, capsize=3)
            ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
            ax.set_title(LABELS[m])
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{split} split: score and bootstrap 95% interval (reference in red)")
        fig.tight_layout()
        target = path if len(report["splits"]) == 1 else path.with_name(f"{path.stem}-{split}.png")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)


def plot_training(train_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
