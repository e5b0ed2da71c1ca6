"""Stages end to end: prepare -> embed -> generate -> evaluate, each skipped when done.

Run directory layout::

    <run_dir>/config.yaml                 the resolved configuration
    <run_dir>/prepare/                    reviews/items/samples.parquet, stats.json
    <run_dir>/embed/vectors.npy           one vector per profile review
    <run_dir>/generate/<method>-<split>/  predictions.jsonl
    <run_dir>/evaluate/<method>-<split>/  scores.parquet (per sample), summary.json
    <run_dir>/results.{json,csv,md}       the results table
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from rich.console import Console
from rich.table import Table

from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.prepare import prepare
from peerdiff.embed import embed_benchmark
from peerdiff.generate import read_jsonl, run_predictions
from peerdiff.methods import Context, get_method
from peerdiff.methods.prompts import approx_tokens
from peerdiff.metrics import METRICS, score_texts
from peerdiff.stage import Stage, atomic_path, fingerprint, read_json, write_json

log = logging.getLogger(__name__)
console = Console(stderr=True)

METRIC_LABELS = {
    "rouge1": "ROUGE-1",
    "rougeL": "ROUGE-L",
    "meteor": "METEOR",
    "bleu": "BLEU",
    "bertscore": "BERTScore",
}


@dataclass
class Session:
    """A run in progress: its config, directories and lazily loaded heavy objects."""

    cfg: RunConfig
    _bench: Benchmark | None = None
    _backend: Any = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_path

    # ---- stages
    def prepare(self) -> Stage:
        st = prepare(self.cfg.data, self.run_dir, self.cfg.seed)
        self.keys["prepare"] = st.key()
        return st

    @property
    def bench(self) -> Benchmark:
        if self._bench is None:
            self._bench = Benchmark(self.prepare().dir)
        return self._bench

    def embed(self) -> Stage:
        bench = self.bench
        st = embed_benchmark(
            bench, self.cfg.embed, self.run_dir, self.cfg.cache_dir, self.keys["prepare"]
        )
        self.keys["embed"] = st.key()
        return st

    @property
    def backend(self):
        if self._backend is None:
            from peerdiff.backends.hf import HFBackend

            c = self.cfg
            self._backend = HFBackend.load(
                c.llm.model,
                c.cache_dir,
                c.llm.device,
                c.llm.dtype,
                c.generate.batch_size,
                c.llm.threads,
            )
        return self._backend

    def gen_params(self) -> GenParams:
        g = self.cfg.generate
        return GenParams(
            g.max_new_tokens,
            g.do_sample,
            g.temperature,
            g.top_p,
            g.repetition_penalty,
            self.cfg.seed,
        )

    def samples(self, split: str):
        s = self.bench.samples(split)
        n = self.cfg.generate.max_samples
        return s[:n] if n else s

    def generate(self, method: str, split: str) -> Stage:
        cfg = self.cfg
        bench = self.bench
        stage = Stage(self.run_dir / "generate", f"{method}-{split}")
        gen_key = fingerprint(asdict(cfg.llm), asdict(self.gen_params()))
        samples = self.samples(split)
        m = get_method(method, cfg)
        key = fingerprint(
            self.keys["prepare"],
            method,
            getattr(m, "__dict__", {}),
            asdict(cfg.prompt),
            gen_key,
            [s.sample_id for s in samples],
        )
        if stage.is_done(key):
            return stage
        backend = self.backend
        count = _token_counter(backend)
        ctx = Context(bench, cfg.prompt, count)
        convs = [m.conversation(s, ctx) for s in samples]
        t0 = time.time()
        recs = run_predictions(
            method,
            samples,
            convs,
            backend,
            self.gen_params(),
            stage.path("predictions.jsonl"),
            gen_key,
        )
        seconds = time.time() - t0
        stage.finish(
            key,
            {
                "method": method,
                "split": split,
                "llm": asdict(cfg.llm),
                "generate": asdict(cfg.generate),
            },
            ["predictions.jsonl"],
            seconds=round(seconds, 2),
            samples=len(recs),
        )
        return stage

    def evaluate(self, method: str, split: str) -> Stage:
        cfg = self.cfg
        gen = Stage(self.run_dir / "generate", f"{method}-{split}")
        stage = Stage(self.run_dir / "evaluate", f"{method}-{split}")
        key = fingerprint(gen.key(), asdict(cfg.evaluate))
        if stage.is_done(key):
            return stage
        recs = read_jsonl(gen.path("predictions.jsonl"))
        bench = self.bench
        refs = [bench.texts[bench.sample(r["sample_id"]).target] for r in recs]
        preds = [r["text"] for r in recs]
        e = cfg.evaluate
        sc = score_texts(
            preds, refs, cfg.cache_dir, e.bertscore, e.bertscore_model, e.bertscore_layers
        )
        cols: dict[str, Any] = {"sample_id": [r["sample_id"] for r in recs]}
        for mname, v in sc.per_sample.items():
            cols[mname] = v
        cols["bleu_stats"] = [row.tolist() for row in sc.bleu_stats]
        with atomic_path(stage.path("scores.parquet")) as tmp:
            pq.write_table(pa.table(cols), tmp)
        summary = {
            "method": method,
            "split": split,
            "n": len(recs),
            "scores": sc.corpus,
            "notes": sc.notes,
            "generation_seconds": (gen.manifest() or {}).get("seconds"),
        }
        write_json(stage.path("summary.json"), summary)
        stage.finish(
            key, {"evaluate": asdict(e)}, ["scores.parquet", "summary.json"], summary=summary
        )
        return stage

    # ---- everything
    def run(self, methods: list[str] | None = None) -> list[dict[str, Any]]:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        t0 = time.time()
        prep = self.prepare()
        print_stats(read_json(prep.path("stats.json")))
        self.embed()
        rows = []
        for method in methods or cfg.methods:
            for split in cfg.generate.splits:
                self.generate(method, split)
                rows.append(read_json(self.evaluate(method, split).path("summary.json")))
        write_results(self.run_dir, rows)
        console.print(results_table(rows, title=f"{cfg.name}: results ({time.time() - t0:.0f} s)"))
        for note in sorted({n for r in rows for n in r.get("notes", [])}):
            console.print(f"[dim]note: {note}[/dim]")
        return rows


def _token_counter(backend: Any) -> Callable[[str], int]:
    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        return approx_tokens
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


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
    console.print(t)


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" if metric == "bleu" else f"{v:.4f}"


def results_table(rows: list[dict[str, Any]], title: str = "results") -> Table:
    t = Table(title=title)
    t.add_column("method")
    t.add_column("split")
    t.add_column("n", justify="right")
    for m in METRICS:
        t.add_column(METRIC_LABELS[m], justify="right")
    t.add_column("gen s", justify="right")
    for r in rows:
        secs = r.get("generation_seconds")
        t.add_row(
            r["method"],
            r["split"],
            str(r["n"]),
            *[_fmt(m, r["scores"].get(m)) for m in METRICS],
            "" if secs is None else f"{secs:.0f}",
        )
    return t


def write_results(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_json(run_dir / "results.json", rows)
    with atomic_path(run_dir / "results.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "split", "n", *METRICS, "generation_seconds"])
            for r in rows:
                w.writerow(
                    [
                        r["method"],
                        r["split"],
                        r["n"],
                        *[r["scores"].get(m) for m in METRICS],
                        r.get("generation_seconds"),
                    ]
                )
    lines = [
        "| method | split | n | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(METRICS),
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['split']} | {r['n']} | "
            + " | ".join(_fmt(m, r["scores"].get(m)) for m in METRICS)
            + " |"
        )
    with atomic_path(run_dir / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def load_scores(run_dir: Path, method: str, split: str) -> dict[str, np.ndarray]:
    """Per-sample scores of one evaluated method (for reports and bootstrap)."""
    t = pq.read_table(Path(run_dir) / "evaluate" / f"{method}-{split}" / "scores.parquet")
    out = {c: np.asarray(t[c].to_pylist()) for c in t.column_names if c != "sample_id"}
    out["sample_id"] = np.asarray(t["sample_id"].to_pylist(), dtype=object)
    return out
