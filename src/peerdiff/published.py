"""The papers' published numbers beside a run that targets them.

``resources/published.yaml`` holds the main tables of DEP (arXiv 2507.20849), DPL (arXiv
2503.02450) and DRP (arXiv 2511.15389) as entered from their sources. :func:`load` flattens
it into :class:`Published` rows. A run *targets* a row when it reads DPL-main
(``data.source: dpl``) of the row's category and its generator is the row's LLM (for DRP,
whose table names only the difference extractor: its extractor is the row's); the report then
shows the row beside the run's own test scores (:func:`beside`, :func:`to_markdown`) with the
protocol differences: the paper's protocol as its source states it, and what this run does
differently (its deviations from the published profile, the BERTScore model, DEP's encoder, a
subsample, the judge).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# metric key -> column label; run scores use the same keys (judge_72b: the run's `judge`)
LABELS = {
    "rouge1": "ROUGE-1",
    "rougeL": "ROUGE-L",
    "meteor": "METEOR",
    "bleu": "BLEU",
    "bertscore": "BERTScore",
    "judge_72b": "S-72B",
    "judge_gpt": "S-GPT",
}
CATEGORIES = {"Books": "Books", "CDs_and_Vinyl": "CDs & Vinyl", "Movies_and_TV": "Movies & TV"}
BERTSCORE_MODEL = "allenai/led-base-16384"  # DEP's model-eval.py (bert_score, 6 layers)
DEP_ENCODER = "BAAI/bge-m3"  # DEP's embedding.py
DPL_JUDGE = "Qwen/Qwen2.5-72B-Instruct-AWQ"  # DPL's eval-72B.py (S-72B)
RUN_KEYS = {"judge_72b": "judge"}  # published metric -> the run's score of the same kind


@dataclass(frozen=True)
class Published:
    """One published row: a method's scores in one table, category and LLM.

    ``llm`` is the generator's checkpoint where a source names it (``None``: never matched to
    a run); ``extractor`` the model that wrote the differences where the table's column is
    that model (DRP).
    """

    paper: str
    arxiv: str
    table: str | None
    source: str
    category: str
    llm: str | None
    llm_label: str
    llm_source: str
    extractor: str | None
    method: str
    scores: dict[str, float]
    std: dict[str, float]
    protocol: tuple[str, ...]

    @property
    def cite(self) -> str:
        where = f" {self.table}" if self.table else ""
        return f"{self.paper}{where} (arXiv {self.arxiv})"


@cache
def load() -> tuple[Published, ...]:
    """Every row of ``resources/published.yaml``."""
    import yaml

    text = resources.files("peerdiff").joinpath("resources/published.yaml").read_text()
    out = []
    for t in yaml.safe_load(text)["tables"]:
        for category, methods in (t.get("rows") or {}).items():
            for method, values in methods.items():
                std = ((t.get("std") or {}).get(category) or {}).get(method)
                out.append(_row(t, category, method, values, std))
        for extractor, by_category in (t.get("extractors") or {}).items():
            for category, values in by_category.items():
                out.append(_row(t, category, t["paper"].lower(), values, None, extractor))
    return tuple(out)


def _row(
    t: Mapping[str, Any],
    category: str,
    method: str,
    values: list[float],
    std: list[float] | None,
    extractor: str | None = None,
) -> Published:
    m = t["metrics"]
    if category not in CATEGORIES or len(values) != len(m) or (std and len(std) != len(m)):
        raise ValueError(
            f"published.yaml: {t['paper']} {category} {method}: not one value per metric"
        )
    return Published(
        paper=t["paper"],
        arxiv=str(t["arxiv"]),
        table=t.get("table"),
        source=" ".join(t["source"].split()),
        category=category,
        llm=t.get("llm"),
        llm_label=t["llm_label"],
        llm_source=" ".join(t["llm_source"].split()),
        extractor=extractor,
        method=method,
        scores=dict(zip(m, map(float, values))),
        std=dict(zip(m, map(float, std))) if std else {},
        protocol=tuple(t.get("protocol") or ()),
    )


def _role_model(config: Mapping[str, Any], role: str) -> str:
    """The model a role's backend runs (an hf backend without a model runs ``llm.model``)."""
    name = (config.get("roles") or {}).get(role) or "local"
    backend = (config.get("backends") or {}).get(name) or {}
    return str(backend.get("model") or (config.get("llm") or {}).get("model") or "default")


def _same_model(a: str, b: str) -> bool:
    """Same checkpoint: equal ids, or a local folder named like the id's last part."""
    return a.rstrip("/").split("/")[-1].lower() == b.rstrip("/").split("/")[-1].lower()


def targeted(config: Mapping[str, Any]) -> list[Published]:
    """The published rows a run with this config (a mapping: ``cfg.to_dict()`` or a run's
    ``config.yaml``) targets: its DPL-main category, its generator (or, for rows that name
    only the extractor, its extractor) and one of its methods."""
    data = config.get("data") or {}
    if data.get("source") != "dpl" or not data.get("category"):
        return []
    generator, extractor = _role_model(config, "generator"), _role_model(config, "extractor")
    methods = set(config.get("methods") or [])
    return [
        p
        for p in load()
        if p.category == data["category"]
        and p.method in methods
        and (
            (p.llm is not None and _same_model(p.llm, generator))
            or (p.llm is None and p.extractor is not None and _same_model(p.extractor, extractor))
        )
    ]


def differences(
    config: Mapping[str, Any],
    rows: list[Published],
    deviations: Sequence[str] = (),
    subset: int | None = None,
) -> list[str]:
    """How the run's protocol differs from the rows': each paper's protocol as published,
    then what this run does differently. ``deviations``: the run's differences from the
    published profile (:func:`peerdiff.paper.deviations`); ``subset``: the number of test
    samples the compared scores cover when they are a subset run's."""
    out = []
    for paper in dict.fromkeys(p.cite for p in rows):
        first = next(p for p in rows if p.cite == paper)
        out += [f"{paper}: {line}" for line in first.protocol]
        out.append(f"{paper}: LLM {first.llm_label}: {first.llm_source}")
    shown = {m for p in rows for m in p.scores}
    ev = config.get("evaluate") or {}
    bs, layer = ev.get("bertscore_model") or "default", ev.get("bertscore_layers")
    if "bertscore" in shown and (bs != BERTSCORE_MODEL or layer != 6):
        out.append(
            f"this run: BERTScore with {bs} (layer {layer or 'last'}), the published one "
            f"with {BERTSCORE_MODEL} (layer 6): not comparable"
        )
    methods = set(config.get("methods") or [])
    enc = (config.get("embed") or {}).get("model") or "default"
    if "dep" in methods and not _same_model(enc, DEP_ENCODER):
        out.append(f"this run: DEP's encoder is {enc} (published: {DEP_ENCODER})")
    if any(p.method == "dep" for p in rows):
        out.append(
            "this run: DEP is trained on this category's train split only (published: one "
            "adapter on all three categories)"
        )
    data = config.get("data") or {}
    if data.get("max_users"):
        out.append(f"this run: a subsample of {data['max_users']} users (published: every user)")
    if subset:
        out.append(f"this run: the first {subset} test samples (published: the whole split)")
    if "judge_72b" in shown:
        judge = (config.get("roles") or {}).get("judge")
        model = _role_model(config, "judge") if judge else None
        if model is None or not _same_model(model, DPL_JUDGE):
            out.append(
                f"this run: S-72B column = the run's judge ({model or 'none'}), the published "
                f"one = {DPL_JUDGE}; S-GPT is never computed here"
            )
    out += [f"this run: {d}" for d in deviations]
    out.append(
        "this run: ROUGE, METEOR and BLEU call rouge_score, nltk and sacrebleu directly "
        "(Hugging Face evaluate wraps the same; its ROUGE is a bootstrap-aggregated mean)"
    )
    return out


def beside(report: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The comparison section of a report (``report["splits"]["test"]["rows"]``: per
    method ``{"method", "n", "scores": {metric: {"value": ...}}}``), or ``None`` when the
    run targets no published row or has no test scores."""
    if config is None:
        return None
    rows = targeted(config)
    splits = report.get("splits") or {}
    # the full test split, else a subset run's (``test-n10``: generate.max_samples=10)
    name = "test" if "test" in splits else next((s for s in splits if s.startswith("test-n")), None)
    test = splits.get(name) if name else None
    if not rows or not test:
        return None
    subset = int(name.removeprefix("test-n")) if name != "test" else None
    measured = {r["method"]: r for r in test["rows"]}
    metrics = [m for m in LABELS if any(m in p.scores for p in rows)]
    table = []
    for method in dict.fromkeys([*measured, *(p.method for p in rows)]):
        mine = [p for p in rows if p.method == method]
        if not mine:
            continue
        if method in measured:
            sc = measured[method]["scores"]
            table.append(
                {
                    "method": method,
                    "source": "this run",
                    "n": measured[method]["n"],
                    "scores": {
                        m: sc[RUN_KEYS.get(m, m)]["value"]
                        for m in metrics
                        if RUN_KEYS.get(m, m) in sc
                    },
                    "std": {},
                }
            )
        for p in mine:
            where = p.cite + (f", extractor {p.extractor}" if p.extractor else "")
            table.append(
                {"method": method, "source": where, "n": None, "scores": p.scores, "std": p.std}
            )
    data = config.get("data") or {}
    return {
        "setting": f"DPL-main {CATEGORIES[data['category']]}, test split; this run's "
        f"generator: {_role_model(config, 'generator')}",
        "metrics": metrics,
        "rows": table,
        "differences": differences(config, rows, report.get("deviations") or [], subset),
    }


def to_markdown(section: Mapping[str, Any] | None) -> str:
    """The section as Markdown (empty when ``section`` is ``None``)."""
    if not section:
        return ""

    def cell(row: Mapping[str, Any], m: str) -> str:
        v = row["scores"].get(m)
        if v is None:
            return "-"
        s = f"{v:.4f}"
        return f"{s} ± {row['std'][m]:.4f}" if m in row["std"] else s

    metrics = section["metrics"]
    lines = [
        "",
        "## Published numbers",
        "",
        f"{section['setting']}. Rows of the papers' main tables for the same category and "
        "LLM (BLEU 0-100); read them with the protocol differences below.",
        "",
        "| method | source | n | " + " | ".join(LABELS[m] for m in metrics) + " |",
        "|---|---|---:|" + "---:|" * len(metrics),
    ]
    for r in section["rows"]:
        n = "" if r["n"] is None else str(r["n"])
        cells = " | ".join(cell(r, m) for m in metrics)
        lines.append(f"| {r['method']} | {r['source']} | {n} | {cells} |")
    lines += ["", "Protocol differences:", "", *[f"- {d}" for d in section["differences"]], ""]
    return "\n".join(lines)
