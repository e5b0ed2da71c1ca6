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
import os
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
from peerdiff.config import SOFT_METHODS, RunConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.prepare import prepare
from peerdiff.data.schema import Sample
from peerdiff.generate import chat_fn, read_jsonl, run_predictions
from peerdiff.methods import Context, get_method
from peerdiff.methods.prompts import approx_tokens, strip_prefix
from peerdiff.metrics import LABELS, METRICS, OPTIONAL_METRICS, score_texts
from peerdiff.stage import Stage, atomic_path, fingerprint, read_json, write_json

log = logging.getLogger(__name__)
console = Console(stderr=True)

# Bump when decoding or soft-prompt training changes behaviour, so old results recompute.
# decode-v3: own decoding loop; the repetition penalty sees real prompt tokens only (not
# padding, not placeholders), so outputs do not depend on batch composition.
DECODE_FORMAT = "decode-v3"
SOFT_FORMAT = "soft-v3"


@dataclass
class Session:
    """A run in progress: its config, directories and lazily loaded heavy objects."""

    cfg: RunConfig
    _bench: Benchmark | None = None
    _backend: Any = None
    _backends: dict[str, Any] = field(default_factory=dict)
    _vllm: Any = None
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
        from peerdiff.embed import embed_benchmark

        bench = self.bench
        st = embed_benchmark(
            bench, self.cfg.embed, self.run_dir, self.cfg.cache_dir, self.keys["prepare"]
        )
        self.keys["embed"] = st.key()
        return st

    def contrast(self) -> Stage:
        """``peerdiff contrast``: slots and difference vectors for every sample."""
        from peerdiff.contrast import compute_contrast
        from peerdiff.embed import load_vectors

        emb = self.embed()
        bench = self.bench
        c = self.cfg.contrast
        st = Stage(self.run_dir, "contrast")
        key = fingerprint(self.keys["embed"], asdict(c))
        if not st.is_done(key):
            t0 = time.time()
            users, items = bench.codes()
            flat, offsets = bench.profile_arrays()
            data = compute_contrast(
                load_vectors(emb.dir),
                users,
                items,
                bench.base_mask,
                flat,
                offsets,
                [s.sample_id for s in bench.samples()],
                c.max_slots,
                c.weighting,
                c.temperature,
            )
            seconds = time.time() - t0
            outputs = data.save(st.dir)
            filled = (data.slots >= 0).sum(1)
            stats = {
                "samples": len(data.sample_ids),
                "slots_per_sample_mean": round(float(filled.mean()), 2) if len(filled) else 0.0,
                "samples_with_all_slots": int((filled == c.max_slots).sum()),
                "samples_without_slots": int((filled == 0).sum()),
                "slot_reviews": int(len(data.review_ids)),
                "peers_per_slot_review_median": (
                    float(np.median(data.n_peers)) if len(data.n_peers) else 0.0
                ),
            }
            st.finish(key, {"contrast": asdict(c)}, outputs, seconds=round(seconds, 3), stats=stats)
        self.keys["contrast"] = key
        return st

    def vectors(self) -> np.ndarray:
        """The embed stage's review vectors (NaN rows: never embedded)."""
        from peerdiff.embed import load_vectors

        return load_vectors(self.embed().dir)

    def soft_context(self):
        from peerdiff.contrast import ContrastData
        from peerdiff.embed import load_vectors
        from peerdiff.methods.softprompt import SoftContext

        cst = self.contrast()
        emb_dir = self.run_dir / "embed"
        vectors = load_vectors(emb_dir)
        inputs = np.load(emb_dir / "inputs.npy")
        ids = [s.sample_id for s in self.bench.samples()]
        return SoftContext(
            self.bench,
            self.cfg.prompt,
            _token_counter(self.backend),
            contrast=ContrastData.load(cst.dir, vectors),
            inputs=dict(zip(ids, inputs)),
        )

    def _soft_parts(self, method: str):
        from peerdiff.methods.softprompt import SoftPromptMethod
        from peerdiff.model.inject import Injector, add_placeholders

        m = SoftPromptMethod(method, self.cfg)
        ids = add_placeholders(self.hf.tokenizer, m.placeholders())
        if self.backend is not self.hf:  # vLLM tokenizes the prompts: same ids there
            assert add_placeholders(self.backend.tokenizer, m.placeholders()) == ids
        return m, Injector(self.hf.model.get_input_embeddings(), ids)

    def train_samples(self) -> list[Sample]:
        """Training samples; with ``train.samples_per_user = n``, each user's latest n."""
        samples = self.bench.samples("train")
        n = self.cfg.train.samples_per_user
        if n is None:
            return samples
        ts = self.bench.timestamps
        by_user: dict[str, list[Sample]] = {}
        for s in samples:
            by_user.setdefault(s.user_id, []).append(s)
        keep = {
            x.sample_id
            for v in by_user.values()
            for x in sorted(v, key=lambda x: -ts[x.target])[:n]
        }
        return [s for s in samples if s.sample_id in keep]

    def train_key(self, method: str) -> str:
        cfg = self.cfg
        return fingerprint(
            SOFT_FORMAT,
            self.keys["contrast"],
            method,
            SOFT_METHODS[method],
            asdict(cfg.dep),
            asdict(cfg.train),
            asdict(cfg.llm),
            asdict(cfg.prompt),
            cfg.seed,
            asdict(self.gen_params()),
        )

    def train(self, method: str) -> Stage:
        """``peerdiff train``: fit one soft-prompt method's adapter; ``best/`` is the selection."""
        import torch

        from peerdiff.model.adapters import build_adapter
        from peerdiff.train import Example, Trainer

        cfg = self.cfg
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed:  # upstream stages once, on the main process (accelerate launch)
            from accelerate import PartialState

            with PartialState().main_process_first():
                self.contrast()
        else:
            self.contrast()
        st = Stage(self.run_dir / "train", method)
        key = self.train_key(method)
        if st.is_done(key):
            return st
        t0 = time.time()
        ctx = self.soft_context()
        m, injector = self._soft_parts(method)
        be = self.hf  # training always runs in transformers
        torch.manual_seed(cfg.seed)
        acfg = m.adapter_config(ctx.contrast.dim, be.model.config.hidden_size)
        adapter = build_adapter(acfg, be.model.get_input_embeddings()).to(be.device)
        samples = self.train_samples()
        examples = [
            Example(be.encode(m.conversation(s, ctx)), self._target_ids(s)) for s in samples
        ]
        feats = m.features(samples, ctx)
        val = self.bench.samples("val")[: cfg.train.val_samples]
        validate, metric = self._validator(m, injector, ctx, val)
        trainer = Trainer(
            be.model, adapter, injector, be.tokenizer.pad_token_id, cfg.train, st.dir, key, cfg.seed
        )
        state = trainer.fit(examples, feats, validate)
        if distributed:
            from accelerate import PartialState

            PartialState().wait_for_everyone()
            if not PartialState().is_main_process:
                return st
        n_params = sum(p.numel() for p in adapter.adapter_params())
        st.finish(
            key,
            {"method": method, "train": asdict(cfg.train), "dep": asdict(cfg.dep)},
            ["best/adapter.safetensors", "best/adapter_config.json", "state.json", "log.jsonl"],
            state=state,
            seconds=round(time.time() - t0, 1),
            train_samples=len(samples),
            prompt_tokens_mean=round(float(np.mean([len(e.prompt_ids) for e in examples])), 1),
            val_samples=len(val),
            val_metric=metric,
            trainable_parameters=n_params,
        )
        return st

    def _target_ids(self, s: Sample) -> list[int]:
        """Target review tokens, cut at ``train.max_target_tokens`` (EOS only if it fits)."""
        tok = self.hf.tokenizer
        ids = tok(self.bench.texts[s.target], add_special_tokens=False)["input_ids"]
        n = self.cfg.train.max_target_tokens
        return ids[:n] if len(ids) >= n else ids + [tok.eos_token_id]

    def _validator(self, m, injector, ctx, val: list[Sample]):
        from peerdiff import metrics

        refs = [self.bench.texts[s.target] for s in val]
        problem = metrics.setup_wordnet(self.cfg.cache_dir)
        metric = "meteor" if problem is None else "rougeL"
        if problem:
            log.warning("selecting epochs by ROUGE-L: %s", problem)
        params = self.gen_params()
        if self.cfg.train.val_max_new_tokens:
            params = GenParams(
                **{**asdict(params), "max_new_tokens": self.cfg.train.val_max_new_tokens}
            )

        def validate(adapter) -> float:
            gen = self._soft_generate_fn(m, injector, ctx, val, adapter, params, "validate")
            preds = [strip_prefix(p) for p in gen(list(range(len(val))))]
            if metric == "meteor":
                score = metrics.meteor(preds, refs)
            else:
                score = metrics.rouge(preds, refs)[1]
            return float(np.mean(score)) if len(score) else 0.0

        return validate, metric

    def _soft_generate_fn(self, m, injector, ctx, samples: list[Sample], adapter, params, desc):
        """A ``generate(indices)`` callable for soft-prompt generation with ``adapter``."""
        import torch

        from peerdiff.train import to_tensors

        be = self.backend
        prompts = [be.encode(m.conversation(s, ctx)) for s in samples]
        feats = m.features(samples, ctx)

        def generate(idx: list[int]) -> list[str]:
            def soft(j: list[int]):
                with torch.no_grad():
                    return adapter(to_tensors(feats, [idx[x] for x in j], be.device))[0]

            return be.generate_soft([prompts[i] for i in idx], soft, injector, params, desc)

        return generate

    def backend_named(self, name: str):
        """The backend called ``name`` in ``cfg.backends`` (created once)."""
        if name not in self._backends:
            b = self.cfg.backends[name]
            if b.type == "hf" and (b.model or self.cfg.llm.model) == self.cfg.llm.model:
                self._backends[name] = self.backend
            elif b.type == "hf":
                from peerdiff.backends.hf import HFBackend

                c = self.cfg
                self._backends[name] = HFBackend.load(
                    b.model,
                    c.cache_dir,
                    c.llm.device,
                    c.llm.dtype,
                    c.generate.batch_size,
                    c.llm.threads,
                )
            else:
                from peerdiff.backends.openai import OpenAIBackend

                self._backends[name] = OpenAIBackend(
                    b.model, b.base_url, b.api_key_env, b.concurrency, b.timeout, b.max_retries
                )
        return self._backends[name]

    def backend_for(self, role: str):
        """The backend doing ``role`` (``generator``, ``extractor``...) per ``cfg.roles``."""
        return self.backend_named(getattr(self.cfg.roles, role))

    @property
    def backend(self):
        """The generation engine of the ``llm`` section: the transformers model (``hf``, default)
        or vLLM (``llm.engine: vllm``)."""
        if self.cfg.llm.engine == "vllm":
            if self._vllm is None:
                from peerdiff.backends.vllm import VLLMBackend
                from peerdiff.model.llm import resolve_llm

                self._vllm = VLLMBackend(resolve_llm(self.cfg.llm.model, self.cfg.cache_dir))
            return self._vllm
        return self.hf

    @property
    def hf(self):
        """The in-process transformers model (training and soft-token injection use it)."""
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
        from peerdiff.config import PIPELINE_METHODS
        from peerdiff.generate import Caller

        cfg = self.cfg
        bench = self.bench
        stage = Stage(self.run_dir / "generate", f"{method}-{split}")
        samples = self.samples(split)
        soft = method in SOFT_METHODS
        multi = method in PIPELINE_METHODS
        if multi:
            self.embed()  # peers' vectors; sets keys["embed"] for the stage key
        trained = self.train(method) if soft else None
        generator = self.backend if soft else self.backend_for("generator")
        gen_key = fingerprint(
            DECODE_FORMAT,
            generator.name,
            asdict(cfg.llm),
            asdict(self.gen_params()),
            trained.key() if trained else None,
        )
        m = None if soft else get_method(method, cfg)
        key = fingerprint(
            self.keys["prepare"],
            method,
            getattr(m, "__dict__", {}) if not multi else None,
            asdict(cfg.prompt),
            asdict(cfg.dep) if soft else None,
            (
                asdict(cfg.pipeline),
                asdict(cfg.roles),
                {k: asdict(v) for k, v in cfg.backends.items()},
            )
            if multi
            else None,
            self.keys.get("embed") if multi else None,
            gen_key,
            [s.sample_id for s in samples],
        )
        if stage.is_done(key):
            return stage
        t0 = time.time()
        extra: dict[str, Any] = {}
        if soft:
            from peerdiff.model.adapters import load_adapter

            ctx = self.soft_context()
            sm, injector = self._soft_parts(method)
            convs = [sm.conversation(s, ctx) for s in samples]
            adapter = load_adapter(trained.path("best"), generator.device).eval()
            gen = self._soft_generate_fn(
                sm, injector, ctx, samples, adapter, self.gen_params(), method
            )
        else:
            ctx = Context(bench, cfg.prompt, _token_counter(generator))
            if multi:
                from peerdiff.embed import load_vectors

                ctx.vectors = load_vectors(self.embed().dir)
                caller = Caller(stage.dir, self.backend_for, self.gen_params())
                convs = m.conversations(samples, ctx, caller)
                extra["method_stats"] = m.stats
                extra["backends"] = {
                    r: self.backend_for(r).name
                    for r in ("extractor", "validator", "summarizer", "generator")
                }
            else:
                convs = [m.conversation(s, ctx) for s in samples]
            gen = chat_fn(generator, convs, self.gen_params(), method)
        recs = run_predictions(
            method, samples, convs, gen, stage.path("predictions.jsonl"), gen_key
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
            **extra,
        )
        return stage

    def evaluate(self, method: str, split: str) -> Stage:
        from peerdiff.generate import cached_generate
        from peerdiff.metrics import judge_conversation, parse_judge

        cfg = self.cfg
        gen = Stage(self.run_dir / "generate", f"{method}-{split}")
        stage = Stage(self.run_dir / "evaluate", f"{method}-{split}")
        judge = cfg.roles.judge
        judge_cfg = asdict(cfg.backends[judge]) if judge else None
        key = fingerprint(gen.key(), asdict(cfg.evaluate), judge, judge_cfg)
        if stage.is_done(key):
            return stage
        recs = read_jsonl(gen.path("predictions.jsonl"))
        bench = self.bench
        targets = [bench.review(bench.sample(r["sample_id"]).target) for r in recs]
        refs = [t.text for t in targets]
        preds = [r["text"] for r in recs]
        e = cfg.evaluate
        sc = score_texts(
            preds, refs, cfg.cache_dir, e.bertscore, e.bertscore_model, e.bertscore_layers
        )
        if judge:
            be = self.backend_named(judge)
            convs = [
                judge_conversation(
                    p,
                    t.text,
                    bench.item(t.item_id).title,
                    bench.item(t.item_id).description,
                    t.rating,
                    t.title,
                )
                for p, t in zip(preds, targets)
            ]
            params = GenParams(max_new_tokens=8)
            jr = cached_generate(
                [r["sample_id"] for r in recs],
                convs,
                chat_fn(be, convs, params, "judge"),
                stage.path("judge.jsonl"),
                fingerprint(be.name, asdict(params)),
            )
            j = np.array([parse_judge(x["raw"]) for x in jr]) / 10
            sc.per_sample["judge"] = j
            sc.corpus["judge"] = float(np.nanmean(j)) if np.isfinite(j).any() else None
            missing = int(np.isnan(j).sum())
            sc.notes.append(
                f"judge: {be.name}, 0-10 rubric divided by 10"
                + (
                    f"; {missing} of {len(j)} answers had no score and are left out"
                    if missing
                    else ""
                )
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
        return self.results(methods, title=f"{cfg.name}: results ({{seconds:.0f}} s)", t0=t0)

    def results(
        self, methods: list[str] | None = None, title: str = "results", t0: float | None = None
    ) -> list[dict[str, Any]]:
        """Generate and evaluate what is missing, then write and print the results table."""
        t0 = time.time() if t0 is None else t0
        rows = []
        for method in methods or self.cfg.methods:
            for split in self.cfg.generate.splits:
                self.generate(method, split)
                rows.append(read_json(self.evaluate(method, split).path("summary.json")))
        write_results(self.run_dir, rows, self.cfg.name)
        console.print(results_table(rows, title=title.format(seconds=time.time() - t0)))
        for note in sorted({n for r in rows for n in r.get("notes", [])}):
            console.print(f"[dim]note: {note}[/dim]")
        return rows


def _token_counter(backend: Any) -> Callable[[str], int]:
    """Exact token counts with a backend's tokenizer, estimates without one."""
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


def shown_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The standard metrics plus optional ones (the judge) that some row has."""
    extra = [m for m in OPTIONAL_METRICS if any(r["scores"].get(m) is not None for r in rows)]
    return [*METRICS, *extra]


def results_table(rows: list[dict[str, Any]], title: str = "results") -> Table:
    metrics = shown_metrics(rows)
    t = Table(title=title)
    t.add_column("method")
    t.add_column("split")
    t.add_column("n", justify="right")
    for m in metrics:
        t.add_column(LABELS[m], justify="right")
    t.add_column("gen s", justify="right")
    for r in rows:
        secs = r.get("generation_seconds")
        t.add_row(
            r["method"],
            r["split"],
            str(r["n"]),
            *[_fmt(m, r["scores"].get(m)) for m in metrics],
            "" if secs is None else f"{secs:.0f}",
        )
    return t


def write_results(run_dir: Path, rows: list[dict[str, Any]], name: str) -> None:
    """``results-<name>.{json,csv,md}`` in the run directory (with the time each method took)."""
    metrics = shown_metrics(rows)
    write_json(run_dir / f"results-{name}.json", rows)
    with atomic_path(run_dir / f"results-{name}.csv") as tmp:
        with open(tmp, "w", newline="") as f:
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
    lines = [
        "| method | split | n | " + " | ".join(LABELS[m] for m in metrics) + " | time (s) |",
        "|---|---|---:|" + "---:|" * (len(metrics) + 1),
    ]
    for r in rows:
        secs = r.get("generation_seconds")
        lines.append(
            f"| {r['method']} | {r['split']} | {r['n']} | "
            + " | ".join(_fmt(m, r["scores"].get(m)) for m in metrics)
            + f" | {'' if secs is None else f'{secs:.0f}'} |"
        )
    with atomic_path(run_dir / f"results-{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def load_scores(run_dir: Path, method: str, split: str) -> dict[str, np.ndarray]:
    """Per-sample scores of one evaluated method (for reports and bootstrap)."""
    t = pq.read_table(Path(run_dir) / "evaluate" / f"{method}-{split}" / "scores.parquet")
    out = {c: np.asarray(t[c].to_pylist()) for c in t.column_names if c != "sample_id"}
    out["sample_id"] = np.asarray(t["sample_id"].to_pylist(), dtype=object)
    return out
