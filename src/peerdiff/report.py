"""``peerdiff report``: every evaluated method of a run, with confidence intervals and plots.

Reads the per-sample scores of ``<run_dir>/evaluate/<method>-<split>/`` and writes
``report.md``, ``report.csv``, ``report.json``, ``report.tex`` (the score and paired-interval
tables in LaTeX, booktabs) and PNG plots into ``<run_dir>/report/``:

- one table per split: ROUGE-1, ROUGE-L, METEOR, BLEU (sacrebleu's 0-100 scale, the
  papers'), BERTScore (and the judge score when present); the best value of each column in
  **bold**, the second best in *italics*; under it a note naming the LLM (the packaged
  default: SmolLM2-135M-Instruct, a Q4_1 GGUF dequantised to float32);
- for each method, the paired bootstrap 95% interval of its difference to a reference
  method (default ``dep`` when evaluated), on the samples both methods share; corpus BLEU is
  recomputed on every resample from per-sample n-gram statistics;
- ``metrics.png``: each metric's value per method with its bootstrap 95% interval, one
  panel per metric, the axis zoomed to the data and the values written above the points;
- ``paired.png``: each method minus the reference per metric, with the paired interval
  (green: the method is better, red: the reference is, grey: no difference);
- ``probe.png``: the user-swap probe's delta with its interval, per method and split (when
  the run has ``probe/``);
- ``training.png``: every trained method's LM loss per batch and validation score per
  epoch, DEP beside its controls (``train/<method>/``; a validation NLL is drawn as NLL);
- ``gains.png`` and a table: who gains -- each method's target NLL minus the reference's,
  per sample, in buckets of the user's profile length (quartiles of the split), with paired
  intervals (above 0: the reference is better there).

Reporting never imports training code; it only reads files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from peerdiff.metrics import (
    LABELS,
    LOWER_IS_BETTER,
    METRICS,
    OPTIONAL_METRICS,
    bootstrap,
    corpus_bleu,
    format_score,
)
from peerdiff.plots import (
    format_signed,
    plot_gains,
    plot_metrics,
    plot_paired,
    plot_probe,
    plot_training,
)
from peerdiff.stage import atomic_path, read_json, write_json


def _group(method: str) -> str:
    from peerdiff import methods

    try:
        return methods.get(method).group
    except ValueError:  # a method this version does not know: list it last
        return "other"


def _order(method: str) -> tuple[int, int]:
    """Baselines, then controls, then DEP's family; registry order within a group."""
    from peerdiff import methods

    groups = ("baseline", "control", "dep", "other")
    names = methods.names()
    return groups.index(_group(method)), names.index(method) if method in names else len(names)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; columns after the first two are right-aligned."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


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
        """The reported score on ``idx`` (all samples by default): the mean; corpus BLEU; and
        perplexity from the summed target NLL over the summed target tokens."""
        if metric == "bleu":
            st = self.bleu_stats if idx is None else self.bleu_stats[idx]
            return corpus_bleu(st)
        if metric == "ppl":
            s, n = self.values["nll_sum"], self.values["nll_tokens"]
            if idx is not None:
                s, n = s[idx], n[idx]
            return float(np.exp(s.sum() / max(n.sum(), 1))) if len(s) else float("nan")
        v = self.values[metric] if idx is None else self.values[metric][idx]
        return float(np.nanmean(v)) if len(v) else float("nan")

    def has(self, metric: str) -> bool:
        return metric in self.values or (metric == "ppl" and "nll_sum" in self.values)


def collect(run_dir: str | Path) -> dict[str, list[MethodScores]]:
    """Every ``evaluate/<method>-<split>`` of a run, grouped by split (baselines, controls,
    then DEP's family)."""
    out: dict[str, list[MethodScores]] = {}
    for d in sorted((Path(run_dir) / "evaluate").glob("*/scores.parquet")):
        summary = read_json(d.parent / "summary.json")
        t = pq.read_table(d)
        values = {
            m: np.asarray(t[m].to_pylist(), dtype=np.float64)
            for m in (*METRICS, *OPTIONAL_METRICS, "nll_sum", "nll_tokens")
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
    for split in out:
        out[split].sort(key=lambda s: _order(s.method))
    return out


def bootstrap_ci(
    ms: MethodScores, metric: str, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """``(value, low, high)``: the score and its bootstrap 95% interval."""
    return bootstrap(lambda idx: ms.stat(metric, idx), len(ms.sample_ids), n, seed)


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
    d, lo, hi = bootstrap(
        lambda r: a.stat(metric, ia[r]) - b.stat(metric, ib[r]), len(pairs), n, seed
    )
    return d, lo, hi, len(pairs)


_fmt = format_score


def profile_lengths(run_dir: str | Path) -> dict[str, int]:
    """Sample id -> number of the user's earlier reviews (``prepare/samples.parquet``)."""
    import pyarrow.compute as pc

    path = Path(run_dir) / "prepare" / "samples.parquet"
    if not path.exists():
        return {}
    t = pq.read_table(path, columns=["sample_id", "profile"])
    return dict(zip(t["sample_id"].to_pylist(), pc.list_value_length(t["profile"]).to_pylist()))


def length_buckets(lengths: np.ndarray) -> list[tuple[int, int]]:
    """Up to four ``(low, high)`` profile-length ranges cut at the quartiles."""
    if len(lengths) == 0:
        return []
    cuts = sorted({int(np.quantile(lengths, q)) for q in (0.25, 0.5, 0.75)})
    lo, out = int(lengths.min()), []
    for c in cuts:
        if lo <= c:
            out.append((lo, c))
            lo = c + 1
    if lo <= int(lengths.max()):
        out.append((lo, int(lengths.max())))
    return out


def gains_by_profile(
    methods: list[MethodScores],
    reference: str,
    lengths: dict[str, int],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Each method's target NLL minus the reference's by profile-length bucket (paired over
    the bucket's shared samples). ``None`` without NLLs or profile lengths."""
    ref = next((m for m in methods if m.method == reference), None)
    if ref is None or not ref.has("nll") or not lengths:
        return None
    ref_len = np.array([lengths.get(s, -1) for s in ref.sample_ids])
    buckets = length_buckets(ref_len[ref_len >= 0])
    rows = []
    for ms in methods:
        if ms is ref or not ms.has("nll"):
            continue
        pos = {s: i for i, s in enumerate(ms.sample_ids)}
        for lo, hi in buckets:
            ir = np.flatnonzero((ref_len >= lo) & (ref_len <= hi))
            ir = np.array([i for i in ir if ref.sample_ids[i] in pos], dtype=np.int64)
            im = np.array([pos[ref.sample_ids[i]] for i in ir], dtype=np.int64)
            if len(ir) < 2:
                continue
            a, b = ms.values["nll"][im], ref.values["nll"][ir]
            d, dlo, dhi = bootstrap(
                lambda r, a=a, b=b: float(a[r].mean() - b[r].mean()), len(ir), n_boot, seed
            )
            rows.append(
                {"method": ms.method, "bucket": [lo, hi], "n": len(ir), "diff": d, "ci": [dlo, dhi]}
            )
    if not rows:
        return None
    counts = [int(((ref_len >= lo) & (ref_len <= hi)).sum()) for lo, hi in buckets]
    return {
        "reference": reference,
        "buckets": [list(b) for b in buckets],
        "counts": counts,  # the reference's samples per bucket (a row's n may be fewer)
        "rows": rows,
    }


def rank_marks(values: list[float], lower_is_better: bool = False) -> list[str]:
    """``**`` for the best, ``*`` for the second best."""
    finite = sorted({v for v in values if np.isfinite(v)}, reverse=not lower_is_better)
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
    lengths = profile_lengths(run_dir)
    report: dict[str, Any] = {"run_dir": str(run_dir), "splits": {}}
    for split, methods in groups.items():
        names = [m.method for m in methods]
        ref_name = reference or ("dep" if "dep" in names else names[0])
        if (
            ref_name not in names
            and "-n" in split
            and any(reference in [m.method for m in g] for g in groups.values())
        ):
            continue  # a subset run's split without the reference: the full split has it
        if ref_name not in names:
            from peerdiff.errors import ConfigError

            raise ConfigError(
                f"--reference {ref_name!r}: that method was not evaluated on {split} in this "
                f"run; evaluated: {', '.join(names)}"
            )
        ref = methods[names.index(ref_name)]
        metrics = [m for m in (*METRICS, *OPTIONAL_METRICS) if all(x.has(m) for x in methods)]
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
        baselines = [r for r in rows if _group(r["method"]) == "baseline"]
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
            "gains": gains_by_profile(methods, ref_name, lengths, n_boot, seed),
        }
    return report


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Results: {report['run_dir']}", ""]
    for split, s in report["splits"].items():
        metrics, rows, ref = s["metrics"], s["rows"], s["reference"]
        marks = {
            m: rank_marks([r["scores"][m]["value"] for r in rows], m in LOWER_IS_BETTER)
            for m in metrics
        }
        body = [
            [r["method"], r["n"]]
            + [f"{marks[m][i]}{_fmt(m, r['scores'][m]['value'])}{marks[m][i]}" for m in metrics]
            for i, r in enumerate(rows)
        ]
        diffs = []
        for r in rows:
            if r["method"] == ref:
                continue
            cells = []
            for m in metrics:
                d = r["scores"][m]["vs_reference"]
                lo, hi = d["ci"]
                sig = "!" if (lo > 0 or hi < 0) else ""
                cells.append(f"{_fmt(m, d['diff'])} [{_fmt(m, lo)}, {_fmt(m, hi)}]{sig}")
            diffs.append([r["method"], *cells])
        lines += [
            f"## {split} split",
            "",
            markdown_table(["method", "n", *[LABELS[m] for m in metrics]], body),
            "Best in **bold**, second in *italics*. ROUGE, METEOR, BERTScore: mean over samples; "
            "BLEU: corpus BLEU (0-100); NLL: target negative log-likelihood per token under the "
            "method's prompt (mean over samples, lower is better); PPL: exp of the summed NLL "
            "over the summed target tokens.",
            "",
            f"Difference to `{ref}` (method minus {ref}), paired bootstrap 95% interval; an "
            "interval that excludes 0 is marked with `!`:",
            "",
            markdown_table(["method", *[LABELS[m] for m in metrics]], diffs),
        ]
        if s.get("best_baseline"):
            lines += [f"Best baseline by METEOR: `{s['best_baseline']}`.", ""]
        g = s.get("gains")
        if g:
            labels = [f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in g["buckets"]]
            cells: dict[str, dict[str, str]] = {}
            ns = dict(zip(labels, g.get("counts", [])))
            for r in g["rows"]:
                lab = labels[g["buckets"].index(r["bucket"])] if r["bucket"] in g["buckets"] else ""
                lo, hi = r["ci"]
                sig = "!" if (lo > 0 or hi < 0) else ""
                cells.setdefault(r["method"], {})[lab] = (
                    f"{r['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]{sig}"
                )
            lines += [
                f"Who gains: target NLL of each method minus `{g['reference']}` by the user's "
                "number of earlier reviews (profile length; quartile buckets of this split), "
                "paired bootstrap 95% interval; above 0: "
                f"`{g['reference']}` is better there (`gains.png`):",
                "",
                markdown_table(
                    ["method", *[f"{lab} (n={ns.get(lab, 0)})" for lab in labels]],
                    [[m, *[c.get(lab, "") for lab in labels]] for m, c in cells.items()],
                ),
            ]
        lines += [f"Note: {n}\n" for n in s["notes"]]
        if report.get("llm"):
            lines += [f"Note: {report['llm']}\n"]
    if not report["splits"]:
        lines += [
            "No evaluated methods in this run yet (`peerdiff run` or `peerdiff evaluate`).",
            "",
        ]
    if report.get("probe"):
        lines += [
            "## User-swap probe",
            "",
            "NLL of the real review with other users' adapter features minus with the user's "
            "own (nats per target token; same prompt text). Above 0 with an interval excluding "
            "0: the soft tokens carry the user. Own rank among 1 + K donors (1 = best).",
            "",
            markdown_table(
                ["method", "split", "n", "delta", "95% CI", "own best", "own rank", "chance rank"],
                [
                    [
                        p["method"],
                        p["split"],
                        p["n"],
                        f"{p['delta']:+.4f}",
                        f"[{p['delta_ci'][0]:+.4f}, {p['delta_ci'][1]:+.4f}]",
                        f"{p['own_best_share']:.0%}",
                        f"{p['own_rank_mean']:.2f}",
                        f"{p['chance_rank']:.1f}",
                    ]
                    for p in report["probe"]
                    if p.get("n")
                ],
            ),
        ]
    if report.get("deviations"):
        lines += [
            "## Deviations from the published profile",
            "",
            "Settings of this run that differ from the DPL/DRP reference code "
            "(`configs/paper.yaml`):",
            "",
            *[f"- {d}" for d in report["deviations"]],
            "",
        ]
    if report.get("training"):
        rows = []
        for method, st in report["training"].items():
            for e in st["epochs"]:
                loss, val, sec = (
                    e.get(k, float("nan")) for k in ("train_loss", "val_score", "train_seconds")
                )
                sel = "yes" if e["epoch"] == st.get("best_epoch") else ""
                rows.append([method, e["epoch"], f"{loss:.4f}", f"{val:.4f}", f"{sec:.0f}", sel])
        lines += [
            "## Training",
            "",
            markdown_table(
                ["method", "epoch", "train loss", "validation score", "train s", "selected"], rows
            ),
        ]
    return "\n".join(lines)


def to_latex(report: dict[str, Any]) -> str:
    """``report.md``'s tables per split in LaTeX (booktabs): the scores, with the best of each
    metric in bold and the second in italics, and each method minus the reference with the
    paired 95% interval under it (a dagger where it excludes 0)."""
    from peerdiff.tables import latex_escape, latex_header, latex_marked, latex_table

    parts = ["% report.tex, written by peerdiff report; needs \\usepackage{booktabs}"]
    llm = f" {latex_escape(report['llm'])}." if report.get("llm") else ""
    for split, s in report["splits"].items():
        metrics, rows, ref = s["metrics"], s["rows"], s["reference"]
        headers = [latex_header(m) for m in metrics]
        marks = {
            m: rank_marks([r["scores"][m]["value"] for r in rows], m in LOWER_IS_BETTER)
            for m in metrics
        }
        body = [
            [latex_escape(r["method"]), str(r["n"])]
            + [latex_marked(_fmt(m, r["scores"][m]["value"]), marks[m][i]) for m in metrics]
            for i, r in enumerate(rows)
        ]
        notes = "".join(f" {latex_escape(n)}" for n in s["notes"])
        parts.append(
            latex_table(
                ["Method", "$n$", *headers],
                body,
                f"Scores on the {latex_escape(split)} split. $\\uparrow$: higher is better, "
                "$\\downarrow$: lower is better; the best value of each column in bold, the "
                f"second in italics. BLEU: corpus BLEU (0--100).{notes}{llm}",
                f"tab:scores-{split}",
            )
        )
        diffs = []
        for r in rows:
            if r["method"] == ref:
                continue
            cells, intervals = [], []
            for m in metrics:
                d = r["scores"][m]["vs_reference"]
                lo, hi = d["ci"]
                sig = "^\\dagger" if (lo > 0 or hi < 0) else ""
                cells.append(f"${format_signed(m, d['diff'])}{sig}$")
                intervals.append(f"{{\\scriptsize $[{_fmt(m, lo)}, {_fmt(m, hi)}]$}}")
            diffs += [[latex_escape(r["method"]), *cells], ["", *intervals]]
        if diffs:
            name = f"\\texttt{{{latex_escape(ref)}}}"
            parts.append(
                latex_table(
                    ["Method", *headers],
                    diffs,
                    f"Each method minus {name} on the {latex_escape(split)} split (paired over "
                    "the samples both have), with the paired bootstrap 95\\% interval under it; "
                    "$^\\dagger$: the interval excludes 0. The arrows give each metric's better "
                    f"direction: a positive difference under $\\uparrow$ favours the method, "
                    f"under $\\downarrow$ it favours {name}.",
                    f"tab:paired-{split}",
                )
            )
    return "\n".join(parts)


def write_report(
    run_dir: str | Path,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``report/report.{md,csv,json,tex}`` and the plots (module docstring).

    Args:
        config: the run's config as a mapping, used to name the LLM when the run directory
            has no ``config.yaml`` (``peerdiff run`` writes one; single stages do not).
    """
    from peerdiff.tables import llm_note

    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(run_dir, reference, n_boot, seed)
    recorded = _run_config(run_dir) or config
    report["llm"] = llm_note(recorded) if recorded is not None else None
    report["training"] = {
        d.parent.name: read_json(d)
        for d in sorted((run_dir / "train").glob("*/state.json"))
        if read_json(d).get("epochs")
    }
    report["deviations"] = _deviations(run_dir)
    report["probe"] = sorted(
        (read_json(d) for d in (run_dir / "probe").glob("*/summary.json")),
        key=lambda p: (_order(p["method"]), p["split"]),
    )
    from peerdiff import published  # the papers' rows, when the run targets a published setting

    report["published"] = published.beside(report, recorded)
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(report) + published.to_markdown(report["published"]))
    if report["splits"]:
        with atomic_path(out / "report.tex") as tmp:
            tmp.write_text(to_latex(report))
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
    plot_paired(report, out / "paired.png")
    plot_gains(report, out / "gains.png")
    probes = [p for p in report.get("probe") or [] if p.get("n")]
    if probes:
        plot_probe(probes, out / "probe.png")
    trained = sorted(
        (
            d.parent
            for d in (run_dir / "train").glob("*/log.jsonl")
            if (d.parent / "state.json").exists()
        ),
        key=lambda d: _order(d.name),
    )
    if trained:
        plot_training(trained, out / "training.png")
    return out


def _run_config(run_dir: Path) -> dict[str, Any] | None:
    """The config ``peerdiff run`` recorded in the run directory (``config.yaml``), if any."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    raw = yaml.safe_load(path.read_text())
    return raw if isinstance(raw, dict) else None


def _deviations(run_dir: Path) -> list[str]:
    """The run's deviations from the published profile (from its ``config.yaml``)."""
    from peerdiff.config import RunConfig, from_dict
    from peerdiff.errors import ConfigError
    from peerdiff.paper import deviations

    raw = _run_config(run_dir)
    if raw is None:
        return []
    try:
        return deviations(from_dict(RunConfig, raw))
    except ConfigError:  # written by another version
        return []
