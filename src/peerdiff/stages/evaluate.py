"""Stage 7, ``evaluate``: per-sample scores of the predictions (with their target NLL), the
corpus summary, and optionally an LLM judge."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.stage import Stage, atomic_path, file_digest, fingerprint, write_json
from peerdiff.stages.common import split_name
from peerdiff.stages.data import Data


def evaluate(
    cfg: RunConfig,
    name: str,
    split: str,
    gen: Stage,
    nll: Stage | None,
    data: Data,
    backends: Backends,
) -> Stage:
    """Per-sample scores of the predictions (and target NLL), plus the corpus summary.

    A subset (``generate.max_samples`` below the split's size) is scored under its own name,
    ``evaluate/<method>-test-n10``, with ``"split": "test-n10"`` and ``max_samples`` in its
    summary, so tables and reports never mix it with the full split.
    """
    from peerdiff.generate import read_jsonl
    from peerdiff.metrics import score_texts, setup_wordnet

    tag = split_name(cfg, data.bench, split)
    stage = Stage(cfg.run_path / "evaluate", f"{name}-{tag}")
    e = cfg.evaluate
    judge = cfg.roles.judge
    key = fingerprint(
        # a metric that could not be computed (METEOR without WordNet) is not final: once
        # its dependency is there, the key changes and the stage scores again
        {"meteor": setup_wordnet(cfg.cache_dir) is None},
        gen.key(),
        file_digest(gen.path("predictions.jsonl")),  # what was scored, not only its recipe
        nll.key() if nll else None,
        file_digest(nll.path("nll.parquet")) if nll else None,
        {"bertscore": e.bertscore, "model": e.bertscore_model, "layers": e.bertscore_layers},
        backends.identity(judge) if judge else None,
    )
    if stage.is_done(key):
        return stage
    recs = read_jsonl(gen.path("predictions.jsonl"))
    bench = data.bench
    targets = [bench.review(bench.sample(r["sample_id"]).target) for r in recs]
    preds = [r["text"] for r in recs]
    sc = score_texts(
        preds,
        [t.text for t in targets],
        cfg.cache_dir,
        e.bertscore,
        e.bertscore_model,
        e.bertscore_layers,
    )
    if judge:
        _judge(cfg, stage, backends, recs, preds, targets, bench, sc)
    cols: dict[str, Any] = {"sample_id": [r["sample_id"] for r in recs], **sc.per_sample}
    cols["bleu_stats"] = [row.tolist() for row in sc.bleu_stats]
    if nll is not None:
        t = pq.read_table(nll.path("nll.parquet")).to_pydict()
        by_id = dict(zip(t["sample_id"], zip(t["nll_sum"], t["nll_tokens"])))
        s_, n_ = np.array([by_id[i] for i in cols["sample_id"]], dtype=np.float64).T.reshape(2, -1)
        cols["nll_sum"], cols["nll_tokens"] = s_, n_.astype(np.int64)
        cols["nll"] = s_ / np.maximum(n_, 1)
        sc.corpus["nll"] = float(cols["nll"].mean()) if len(s_) else None
        sc.corpus["ppl"] = float(np.exp(s_.sum() / max(n_.sum(), 1))) if len(s_) else None
    elif cfg.evaluate.nll:
        sc.notes.append(f"{name}: no target NLL (its generator is not a local transformers model)")
    with atomic_path(stage.path("scores.parquet")) as tmp:
        pq.write_table(pa.table(cols), tmp)
    summary = {
        "method": name,
        "split": tag,
        **({"max_samples": cfg.generate.max_samples} if tag != split else {}),
        "n": len(recs),
        "scores": sc.corpus,
        "notes": sc.notes,
        "generation_seconds": (gen.manifest() or {}).get("seconds"),
        **{k: v for k, v in (gen.manifest() or {}).items() if k == "adapter_key"},
    }
    write_json(stage.path("summary.json"), summary)
    stage.finish(key, {"evaluate": asdict(e)}, ["scores.parquet", "summary.json"], summary=summary)
    return stage


def _judge(cfg, stage, backends, recs, preds, targets, bench, sc) -> None:
    """The LLM-judge score per sample (0-10 divided by 10). Greedy; an answer cut at its
    budget, with unfinished thinking, or without a leading score is missing, not 0."""
    from peerdiff.backends.base import Completion
    from peerdiff.generate import cached_generate, chat_fn, resumable_chunk
    from peerdiff.metrics import judge_conversation, parse_judge

    be = backends.named(cfg.roles.judge)
    bcfg = cfg.backends[cfg.roles.judge]
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
    budget = cfg.evaluate.judge_max_tokens + (bcfg.reasoning_tokens if bcfg.reasoning else 0)
    params = GenParams(max_new_tokens=budget, seed=cfg.seed)
    jr = cached_generate(
        [r["sample_id"] for r in recs],
        convs,
        chat_fn(be, convs, params, "judge", bcfg.instructions),
        stage.path("judge.jsonl"),
        fingerprint(backends.identity(cfg.roles.judge), bcfg.instructions, asdict(params)),
        resumable_chunk(be),
    )
    j = (
        np.array(
            [
                parse_judge(
                    Completion(x["raw"], x.get("reasoning", ""), x.get("finish_reason", "stop"))
                )
                for x in jr
            ]
        )
        / 10
    )
    sc.per_sample["judge"] = j
    sc.corpus["judge"] = float(np.nanmean(j)) if np.isfinite(j).any() else None
    missing = int(np.isnan(j).sum())
    sc.notes.append(
        f"judge: {be.name}, 0-10 rubric divided by 10"
        + (f"; {missing} of {len(j)} answers had no score and are left out" if missing else "")
    )
