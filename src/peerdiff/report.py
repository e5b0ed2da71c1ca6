"""``peerdiff report``: every evaluated method of a run, with confidence intervals and plots.

Reads the per-sample scores of ``<run_dir>/evaluate/<method>-<split>/`` and writes
``report.md``, ``report.csv``, ``report.json`` and PNG plots into ``<run_dir>/report/``:

- one table per split: ROUGE-1, ROUGE-L, METEOR, BLEU, BERTScore (and the judge score when
  present); the best value of each column in **bold**, the second best in *italics*;
- for each method, the paired bootstrap 95% interval of its difference to a reference
  method (default ``dep`` when evaluated), on the samples both methods share; corpus BLEU is
  recomputed on every resample from per-sample n-gram statistics;
- ``metrics.png``: each metric's value per method with its bootstrap 95% interval;
- ``training.png``: a soft-prompt method's training loss per step and validation score per
  epoch (``train/<method>/``).

Reporting never imports training code; it only reads files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq

from peerdiff.metrics import LABELS, METRICS, OPTIONAL_METRICS, corpus_bleu
from peerdiff.stage import atomic_path, read_json, write_json

BASELINES = ("nonperso", "rag", "pag", "dpl", "drp", "pplug")


@dataclass
class MethodScores:
    """Per-sample scores of one method on one split."""

    method: str
    split: str
    sample_ids: np.ndarray
    values: dict[str, np.ndarray]  # metric -> per-sample values (bleu: sentence BLEU)
    bleu_stats: np.ndarray  # (n, 10)
    notes: list[str]

    def stat(self, metric: str, idx: np.ndarray | None = None) -> float:
        """The reported score on ``idx`` (all samples by default): mean, or corpus BLEU."""
        if metric == "bleu":
            st = self.bleu_stats if idx is None else self.bleu_stats[idx]
            return corpus_bleu(st)
        v = self.values[metric] if idx is None else self.values[metric][idx]
        return float(np.nanmean(v)) if len(v) else float("nan")


def collect(run_dir: str | Path) -> dict[str, list[MethodScores]]:
    """Every ``evaluate/<method>-<split>`` of a run, grouped by split (method order: baselines
    first, in :data:`BASELINES` order, then the rest alphabetically)."""
    out: dict[str, list[MethodScores]] = {}
    for d in sorted((Path(run_dir) / "evaluate").glob("*/scores.parquet")):
        summary = read_json(d.parent / "summary.json")
        t = pq.read_table(d)
        values = {
            m: np.asarray(t[m].to_pylist(), dtype=np.float64)
            for m in (*METRICS, *OPTIONAL_METRICS)
            if m in t.column_names
        }
        ms = MethodScores(
            summary["method"],
            summary["split"],
            np.asarray(t["sample_id"].to_pylist(), dtype=object),
            values,
            np.asarray(t["bleu_stats"].to_pylist(), dtype=np.int64).reshape(t.num_rows, -1),
            summary.get("notes", []),
        )
        out.setdefault(ms.split, []).append(ms)
    order = {m: i for i, m in enumerate(BASELINES)}
    for split in out:
        out[split].sort(key=lambda s: (order.get(s.method, len(order)), s.method))
    return out


def bootstrap_ci(
    ms: MethodScores, metric: str, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """``(value, low, high)``: the score and its bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    k = len(ms.sample_ids)
    vals = [ms.stat(metric, rng.integers(0, k, k)) for _ in range(n)]
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return ms.stat(metric), float(lo), float(hi)


def paired_difference(
    a: MethodScores, b: MethodScores, metric: str, n: int = 1000, seed: int = 0
) -> tuple[float, float, float, int]:
    """``stat(a) - stat(b)`` on their shared samples with a paired bootstrap 95% interval.

    Returns:
        ``(difference, low, high, n_shared)``.
    """
    pos_b = {s: i for i, s in enumerate(b.sample_ids)}
    pairs = [(i, pos_b[s]) for i, s in enumerate(a.sample_ids) if s in pos_b]
    ia = np.array([p[0] for p in pairs], dtype=np.int64)
    ib = np.array([p[1] for p in pairs], dtype=np.int64)
    rng = np.random.default_rng(seed)
    k = len(pairs)
    diffs = []
    for _ in range(n):
        r = rng.integers(0, k, k)
        diffs.append(a.stat(metric, ia[r]) - b.stat(metric, ib[r]))
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return a.stat(metric, ia) - b.stat(metric, ib), float(lo), float(hi), int(k)


def _fmt(metric: str, v: float) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.2f}" if metric == "bleu" else f"{v:.4f}"


def _rank_marks(values: list[float]) -> list[str]:
    """``**`` for the best, ``*`` for the second best (higher is better)."""
    finite = sorted({v for v in values if np.isfinite(v)}, reverse=True)
    marks = []
    for v in values:
        if finite and v == finite[0]:
            marks.append("**")
        elif len(finite) > 1 and v == finite[1]:
            marks.append("*")
        else:
            marks.append("")
    return marks


def build_report(
    run_dir: str | Path, reference: str | None = None, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Compute tables and intervals; returns the JSON-able report."""
    groups = collect(run_dir)
    report: dict[str, Any] = {"run_dir": str(run_dir), "splits": {}}
    for split, methods in groups.items():
        names = [m.method for m in methods]
        ref_name = reference or ("dep" if "dep" in names else names[0])
        if ref_name not in names:
            raise ValueError(f"reference method {ref_name!r} was not evaluated on {split}: {names}")
        ref = methods[names.index(ref_name)]
        metrics = [m for m in (*METRICS, *OPTIONAL_METRICS) if all(m in x.values for x in methods)]
        rows = []
        for ms in methods:
            row: dict[str, Any] = {"method": ms.method, "n": len(ms.sample_ids), "scores": {}}
            for metric in metrics:
                v, lo, hi = bootstrap_ci(ms, metric, n_boot, seed)
                entry = {"value": v, "ci": [lo, hi]}
                if ms is not ref:
                    d, dlo, dhi, k = paired_difference(ms, ref, metric, n_boot, seed)
                    entry["vs_reference"] = {"diff": d, "ci": [dlo, dhi], "n": k}
                row["scores"][metric] = entry
            rows.append(row)
        baselines = [r for r in rows if r["method"] in BASELINES]
        best_baseline = (
            max(baselines, key=lambda r: r["scores"]["meteor"]["value"])["method"]
            if baselines and "meteor" in metrics
            else None
        )
        report["splits"][split] = {
            "reference": ref_name,
            "best_baseline": best_baseline,
            "metrics": metrics,
            "rows": rows,
            "notes": sorted({n for m in methods for n in m.notes}),
        }
    return report


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Results: {report['run_dir']}", ""]
    for split, s in report["splits"].items():
        metrics, rows, ref = s["metrics"], s["rows"], s["reference"]
        lines += [f"## {split} split", ""]
        lines.append("| method | n | " + " | ".join(LABELS[m] for m in metrics) + " |")
        lines.append("|---|---:|" + "---:|" * len(metrics))
        marks = {m: _rank_marks([r["scores"][m]["value"] for r in rows]) for m in metrics}
        for i, r in enumerate(rows):
            cells = []
            for m in metrics:
                mk = marks[m][i]
                cells.append(f"{mk}{_fmt(m, r['scores'][m]['value'])}{mk}")
            lines.append(f"| {r['method']} | {r['n']} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Best in **bold**, second in *italics*. ROUGE, METEOR, BERTScore: mean over samples; "
            "BLEU: corpus BLEU (0-100).",
            "",
            f"Difference to `{ref}` (method minus {ref}), paired bootstrap 95% interval; an "
            "interval that excludes 0 is marked with `!`:",
            "",
            "| method | " + " | ".join(LABELS[m] for m in metrics) + " |",
            "|---|" + "---:|" * len(metrics),
        ]
        for r in rows:
            if r["method"] == ref:
                continue
            cells = []
            for m in metrics:
                d = r["scores"][m]["vs_reference"]
                lo, hi = d["ci"]
                sig = "!" if (lo > 0 or hi < 0) else ""
                cells.append(f"{_fmt(m, d['diff'])} [{_fmt(m, lo)}, {_fmt(m, hi)}]{sig}")
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        if s.get("best_baseline"):
            lines += ["", f"Best baseline by METEOR: `{s['best_baseline']}`."]
        for n in s["notes"]:
            lines.append(f"\nNote: {n}")
        lines.append("")
    if not report["splits"]:
        lines += [
            "No evaluated methods in this run yet (`peerdiff run` or `peerdiff evaluate`).",
            "",
        ]
    if report.get("training"):
        lines += [
            "## Training",
            "",
            "| method | epoch | train loss | validation score | train s | selected |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for method, st in report["training"].items():
            for e in st["epochs"]:
                sel = "yes" if e["epoch"] == st.get("best_epoch") else ""
                loss, val, sec = (
                    e.get(k, float("nan")) for k in ("train_loss", "val_score", "train_seconds")
                )
                lines.append(
                    f"| {method} | {e['epoch']} | {loss:.4f} | {val:.4f} | {sec:.0f} | {sel} |"
                )
        lines.append("")
    return "\n".join(lines)


def write_report(
    run_dir: str | Path,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    training_method: str = "dep",
) -> Path:
    """Write ``report/report.{md,csv,json}``, ``metrics.png`` and ``training.png``."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(run_dir, reference, n_boot, seed)
    report["training"] = {
        d.parent.name: read_json(d)
        for d in sorted((run_dir / "train").glob("*/state.json"))
        if read_json(d).get("epochs")
    }
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(report))
    with atomic_path(out / "report.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "split",
                "method",
                "n",
                "metric",
                "value",
                "ci_low",
                "ci_high",
                "reference",
                "diff",
                "diff_low",
                "diff_high",
            ]
        )
        for split, s in report["splits"].items():
            for r in s["rows"]:
                for m in s["metrics"]:
                    e = r["scores"][m]
                    d = e.get("vs_reference")
                    w.writerow(
                        [
                            split,
                            r["method"],
                            r["n"],
                            m,
                            e["value"],
                            *e["ci"],
                            s["reference"],
                            *(([d["diff"], *d["ci"]]) if d else ["", "", ""]),
                        ]
                    )
    plot_metrics(report, out / "metrics.png")
    train = run_dir / "train" / training_method
    if (train / "log.jsonl").exists():
        plot_training(train, out / "training.png")
    return out


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
