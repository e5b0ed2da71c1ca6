"""What runs print and write: benchmark statistics, the results and probe tables (rich),
the results files (CSV, Markdown, JSON, LaTeX) and the line that names the LLM under
results."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from peerdiff.config.sections import DEFAULT_LLM_ALIASES, DEFAULT_LLM_NOTE
from peerdiff.metrics import LABELS, LOWER_IS_BETTER, METRICS, OPTIONAL_METRICS, format_score
from peerdiff.stage import atomic_path, write_json

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


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


def llm_note(config: dict[str, Any]) -> str:
    """``"LLM: ..."``: the generator of a run's results, from its config as a mapping
    (``cfg.to_dict()`` or a run's ``config.yaml``). The packaged default says that it is a
    dequantised Q4_1 GGUF, whose numbers are not the Hugging Face checkpoint's."""
    role = (config.get("roles") or {}).get("generator") or "local"
    backend = (config.get("backends") or {}).get(role) or {}
    model = backend.get("model") or (config.get("llm") or {}).get("model") or "default"
    if backend.get("type") == "openai":
        return f"LLM: {model} (backend {role}, an OpenAI-compatible server)"
    if model in DEFAULT_LLM_ALIASES:
        return f"LLM: {DEFAULT_LLM_NOTE}"
    if str(model).endswith(".gguf"):
        return f"LLM: {model}, dequantised to float32"
    return f"LLM: {model}"


def shown_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The standard metrics plus optional ones (NLL, perplexity, the judge) some row has."""
    extra = [m for m in OPTIONAL_METRICS if any(r["scores"].get(m) is not None for r in rows)]
    return [*METRICS, *extra]


def results_table(
    rows: list[dict[str, Any]], title: str = "results", note: str | None = None
) -> Table:
    """The results rows as a table; ``note`` (:func:`llm_note`) is printed under it."""
    metrics = shown_metrics(rows)
    t = Table(title=title, caption=note, caption_justify="left")
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


def _yaml_value(v: Any) -> str:
    """A value as an override or YAML spells it (``null``, ``true``, ``[a, b]``)."""
    if isinstance(v, str):
        return v
    return json.dumps(v)


def config_table(keys: list[Any], title: str = "config") -> Table:
    """``peerdiff config``: key, value, default (only where the value differs), help."""
    t = Table(title=title)
    for col in ("key", "value", "default", "help"):
        t.add_column(col, overflow="fold")
    for k in keys:
        differs = k.value != k.default
        t.add_row(
            k.key,
            _yaml_value(k.value),
            _yaml_value(k.default) if differs else "",
            k.help,
            style="bold" if differs else None,
        )
    return t


def results_json(rows: list[dict[str, Any]], note: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``results-<name>.json``: each as evaluated, plus ``labels`` (each metric's
    name as the tables print it, with its scale: ``"bleu": "BLEU (0-100)"``) and ``llm``
    (``note``, :func:`llm_note`, without its ``LLM: ``; ``None`` without a note). Still a
    list of rows, as the file always was."""
    labels = {m: LABELS[m] for m in shown_metrics(rows)}
    llm = note.removeprefix("LLM: ") if note else None
    return [{**r, "labels": labels, "llm": llm} for r in rows]


def write_results(
    run_dir: Path, rows: list[dict[str, Any]], name: str, note: str | None = None
) -> None:
    """``results-<name>.{json,csv,md,tex}`` in the run directory; ``note`` (:func:`llm_note`)
    goes under the Markdown table, into the LaTeX table's caption and into each JSON row
    (:func:`results_json`)."""
    from peerdiff.report import markdown_table

    metrics = shown_metrics(rows)
    write_json(run_dir / f"results-{name}.json", results_json(rows, note))
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
    if note:
        table += f"\n{note}\n"
    with atomic_path(run_dir / f"results-{name}.md") as tmp:
        tmp.write_text(table)
    with atomic_path(run_dir / f"results-{name}.tex") as tmp:
        tmp.write_text(results_latex(rows, name, note))


_LATEX_SPECIAL = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
)


def latex_escape(text: Any) -> str:
    """``text`` with LaTeX's special characters escaped (``dep_v2`` -> ``dep\\_v2``)."""
    return str(text).translate(_LATEX_SPECIAL)


def latex_header(metric: str) -> str:
    """A metric's column header with the direction that is better (``NLL $\\downarrow$``);
    BLEU's scale (0-100) is left to the caption to keep the table narrow."""
    arrow = r"$\downarrow$" if metric in LOWER_IS_BETTER else r"$\uparrow$"
    return f"{latex_escape('BLEU' if metric == 'bleu' else LABELS[metric])} {arrow}"


def latex_marked(cell: str, mark: str) -> str:
    """``cell`` in bold for ``**`` (the best), in italics for ``*`` (the second best)."""
    return {"**": rf"\textbf{{{cell}}}", "*": rf"\textit{{{cell}}}"}.get(mark, cell)


def latex_table(
    headers: list[str],
    rows: list[list[str]],
    caption: str | None = None,
    label: str | None = None,
    left: int = 1,
    breaks: tuple[int, ...] = (),
) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) in a ``table`` float.

    Args:
        headers, rows: cells as LaTeX (escape text with :func:`latex_escape`).
        left: how many leading columns are left-aligned; the others are right-aligned.
        breaks: indexes of rows that get a ``\\midrule`` above them (between splits).
    """
    align = "l" * left + "r" * (len(headers) - left)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}"]
    lines.append(rf"\begin{{tabular}}{{{align}}}")
    lines += [r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        if i in breaks:
            lines.append(r"\midrule")
        lines.append(" & ".join(r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    if label:
        lines.append(rf"\label{{{re.sub(r'[^A-Za-z0-9:._-]', '-', label)}}}")
    return "\n".join([*lines, r"\end{table}"]) + "\n"


def results_latex(rows: list[dict[str, Any]], name: str, note: str | None = None) -> str:
    """The results rows as a booktabs table: metric headers with arrows to the better
    direction, the best value of each metric per split in bold and the second in italics,
    ``note`` (:func:`llm_note`) in the caption."""
    from peerdiff.report import rank_marks

    metrics = shown_metrics(rows)
    splits = list(dict.fromkeys(r["split"] for r in rows))
    several = len(splits) > 1
    body: list[list[str]] = []
    breaks = []
    for split in splits:
        group = [r for r in rows if r["split"] == split]
        if body:
            breaks.append(len(body))
        values = {m: [r["scores"].get(m) for r in group] for m in metrics}
        marks = {
            m: rank_marks(
                [float("nan") if v is None else v for v in values[m]], m in LOWER_IS_BETTER
            )
            for m in metrics
        }
        for i, r in enumerate(group):
            secs = r.get("generation_seconds")
            body.append(
                [
                    latex_escape(r["method"]),
                    *([latex_escape(split)] if several else []),
                    str(r["n"]),
                    *[latex_marked(format_score(m, values[m][i]), marks[m][i]) for m in metrics],
                    "--" if secs is None else f"{secs:.0f}",
                ]
            )
    where = "" if several or not splits else f" on the {latex_escape(splits[0])} split"
    caption = (
        f"Results of run \\texttt{{{latex_escape(name)}}}{where}. $\\uparrow$: higher is better, "
        "$\\downarrow$: lower is better; the best value of each column"
        + (" per split" if several else "")
        + " in bold, the second in italics. BLEU: corpus BLEU (0--100)."
        + (" NLL: target negative log-likelihood per token." if "nll" in metrics else "")
        + (" PPL: its perplexity over all target tokens." if "ppl" in metrics else "")
        + "".join(
            f" {latex_escape(n)}" for n in sorted({n for r in rows for n in r.get("notes", [])})
        )
        + (f" {latex_escape(note)}." if note else "")
    )
    headers = [
        "Method",
        *(["Split"] if several else []),
        "$n$",
        *[latex_header(m) for m in metrics],
        "Gen.\\ time (s)",
    ]
    return (
        f"% results-{name}.tex, written by peerdiff; needs \\usepackage{{booktabs}}\n"
        + latex_table(
            headers, body, caption, f"tab:results-{name}", 2 if several else 1, tuple(breaks)
        )
    )
