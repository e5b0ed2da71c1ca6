"""The per-method stages: generate, likelihood (target NLL), evaluate and the swap probe."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from peerdiff import methods
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.errors import ConfigError
from peerdiff.stage import Stage, atomic_path, file_digest, fingerprint, read_json, write_json
from peerdiff.stages.common import (
    DECODE_FORMAT,
    NLL_FORMAT,
    PROBE_FORMAT,
    gen_params,
    injector,
    method_prompts,
    prompt_key,
    require_adapter,
    samples,
    target_ids,
    train_samples,
)
from peerdiff.stages.data import Data


def generate(
    cfg: RunConfig,
    name: str,
    split: str,
    data: Data,
    backends: Backends,
    adapter: Stage | None = None,
) -> Stage:
    """``peerdiff generate``: one prediction per sample (resumable JSONL).

    When the target NLL is also due (``evaluate.nll``, stage not done) and the generator is
    the local model that scores it, both come from one prefill of each prompt
    (:meth:`peerdiff.backends.hf.HFBackend.generate_scored`) and the ``nll`` stage is
    written here too; :func:`likelihood` then finds it done.

    Raises:
        MissingStageError: a soft-prompt method whose adapter was not trained.
    """
    from peerdiff.generate import (
        chat_fn,
        resumable_chunk,
        row_digests,
        run_predictions,
        soft_generate_fn,
    )
    from peerdiff.model.adapters import load_adapter, soft_fn

    spec = methods.get(name)
    if spec.soft:
        require_adapter(name, adapter)
    items = samples(cfg, data.bench, split)
    who = backends.identity("local") if spec.soft else backends.role_identity("generator")
    params = gen_params(cfg)
    gen_key = fingerprint(DECODE_FORMAT, who, asdict(params))
    key = fingerprint(prompt_key(cfg, name, split, items, data, backends, adapter), gen_key)
    stage = Stage(cfg.run_path / "generate", f"{name}-{split}")
    if stage.is_done(key):
        return stage
    t0 = time.time()
    generator = backends.engine if spec.soft else backends.role("generator")
    P = method_prompts(cfg, name, split, items, data, backends, generator)
    nll = _nll_plan(cfg, name, split, items, data, backends, adapter) if cfg.evaluate.nll else None
    scored = nll is not None and not nll[0].is_done(nll[1]) and nll[2] is generator
    sums: dict[int, float] = {}
    targets: list[list[int]] = []
    if spec.soft or scored:
        ids = [generator.encode(c, spec.soft) for c in P.conversations]
    if scored:
        n = cfg.evaluate.nll_target_tokens
        targets = [target_ids(generator.tokenizer, data.bench.texts[s.target], n) for s in items]
    tokens = inj = None
    if spec.soft:
        inj = injector(spec.build(cfg), backends)
        ad = load_adapter(adapter.path("best"), generator.device).eval()
        if scored:
            tokens = soft_fn(ad, P.features, generator.device)
    if scored:

        def gen(idx: list[int]) -> list[str]:
            soft = None if tokens is None else (lambda j: tokens([idx[x] for x in j]))
            texts, s_ = generator.generate_scored(
                [ids[i] for i in idx], [targets[i] for i in idx], params, name, soft, inj
            )
            sums.update(zip(idx, s_))
            return texts

    elif spec.soft:
        gen = soft_generate_fn(generator, inj, ad, ids, P.features, params, name)
    else:
        gen = chat_fn(generator, P.conversations, params, name)
    recs = run_predictions(
        name,
        items,
        P.conversations,
        gen,
        stage.path("predictions.jsonl"),
        gen_key,
        resumable_chunk(generator),
        inputs=row_digests(adapter.key(), P.features) if spec.soft else None,
        # each line keeps its prefill's NLL sum: a resumed run writes the same NLL stage
        scores=(lambda i: {"nll_sum": float(sums[i]), "nll_key": nll[1]}) if scored else None,
    )
    if scored:  # lines kept from an interrupted run bring their sums; others: apart
        kept = [r.get("nll_sum") if r.get("nll_key") == nll[1] else None for r in recs]
        scored = all(s is not None for s in kept)
    if scored:
        nll_stage, nll_key, _ = nll
        _write_nll(
            nll_stage,
            nll_key,
            name,
            split,
            items,
            np.array(kept, dtype=np.float64),
            np.array([len(t) for t in targets], dtype=np.int64),
            ids,
            n,
            time.time() - t0,
            with_generation=True,
        )
    extra: dict[str, Any] = {}
    if len(spec.roles) > 1:
        extra = {
            "method_stats": P.stats,
            "backends": {r: backends.role_identity(r) for r in spec.roles},
        }
    stage.finish(
        key,
        {"method": name, "split": split, "generate": asdict(cfg.generate)},
        ["predictions.jsonl"],
        seconds=round(time.time() - t0, 2),
        samples=len(recs),
        nll_in_same_pass=scored,
        **extra,
    )
    return stage


def _nll_plan(cfg, name, split, items, data, backends, adapter):
    """``(stage, key, scorer)`` of a method's target-NLL stage, or ``None`` when its
    generator runs on a server (no likelihoods there)."""
    spec = methods.get(name)
    if not (spec.soft or backends.scores_locally("generator")):
        return None
    if spec.soft:
        require_adapter(name, adapter)
    who = backends.identity("local") if spec.soft else backends.role_identity("generator")
    n = cfg.evaluate.nll_target_tokens
    key = fingerprint(
        NLL_FORMAT, prompt_key(cfg, name, split, items, data, backends, adapter), who, n
    )
    scorer = backends.local if spec.soft else backends.scoring("generator")
    return Stage(cfg.run_path / "nll", f"{name}-{split}"), key, scorer


def _write_nll(
    stage, key, name, split, items, sums, counts, prompts, n, seconds, with_generation=False
) -> None:
    table = pa.table(
        {"sample_id": [s.sample_id for s in items], "nll_sum": sums, "nll_tokens": counts}
    )
    with atomic_path(stage.path("nll.parquet")) as tmp:
        pq.write_table(table, tmp)
    stage.finish(
        key,
        {"method": name, "split": split, "nll_target_tokens": n},
        ["nll.parquet"],
        seconds=round(seconds, 2),
        prompt_tokens_mean=round(float(np.mean([len(p) for p in prompts])), 1) if prompts else 0,
        nll=float(np.mean(sums / np.maximum(counts, 1))) if len(sums) else None,
        with_generation=with_generation,
    )


def likelihood(
    cfg: RunConfig,
    name: str,
    split: str,
    data: Data,
    backends: Backends,
    adapter: Stage | None = None,
) -> Stage | None:
    """Target NLL per sample under the method's exact prompt (``nll/<method>-<split>``).

    ``None`` when the method's generator runs on a server (no likelihoods there). Usually
    already written by :func:`generate` from the same prefill; computed here otherwise.
    """
    from peerdiff.model.adapters import load_adapter, soft_fn
    from peerdiff.probe import target_nll

    spec = methods.get(name)
    items = samples(cfg, data.bench, split)
    plan = _nll_plan(cfg, name, split, items, data, backends, adapter)
    if plan is None:
        return None
    stage, key, scorer = plan
    if stage.is_done(key):
        return stage
    t0 = time.time()
    n = cfg.evaluate.nll_target_tokens
    P = method_prompts(cfg, name, split, items, data, backends, scorer)
    prompts = [scorer.encode(c, spec.soft) for c in P.conversations]
    targets = [target_ids(scorer.tokenizer, data.bench.texts[s.target], n) for s in items]
    kw: dict[str, Any] = {}
    if spec.soft:
        inj = injector(spec.build(cfg), backends)
        ad = load_adapter(adapter.path("best"), scorer.device).eval()
        kw = {"soft": soft_fn(ad, P.features, scorer.device), "injector": inj}
    sums, counts = target_nll(
        scorer.model,
        scorer.tokenizer.pad_token_id,
        prompts,
        targets,
        batch_size=cfg.evaluate.nll_batch_size,
        desc=f"nll {name}",
        **kw,
    )
    _write_nll(stage, key, name, split, items, sums, counts, prompts, n, time.time() - t0)
    return stage


def evaluate(
    cfg: RunConfig,
    name: str,
    split: str,
    gen: Stage,
    nll: Stage | None,
    data: Data,
    backends: Backends,
) -> Stage:
    """Per-sample scores of the predictions (and target NLL), plus the corpus summary."""
    from peerdiff.generate import read_jsonl
    from peerdiff.metrics import score_texts, setup_wordnet

    stage = Stage(cfg.run_path / "evaluate", f"{name}-{split}")
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
        "split": split,
        "n": len(recs),
        "scores": sc.corpus,
        "notes": sc.notes,
        "generation_seconds": (gen.manifest() or {}).get("seconds"),
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


def probe(
    cfg: RunConfig, name: str, split: str, data: Data, backends: Backends, adapter: Stage
) -> Stage:
    """``peerdiff probe``: own vs ``probe.donors`` other users' features, same prompt text.

    On ``train``, the samples the adapter trained on (memorisation); on ``val``/``test``,
    unseen targets (generalisation).
    """
    from peerdiff.model.adapters import load_adapter
    from peerdiff.probe import pick_donors, summarize_swap, swap_probe

    spec = methods.get(name)
    require_adapter(name, adapter)
    m = spec.build(cfg)
    if m.kind not in ("dep", "pplug"):
        raise ConfigError(f"{name!r} has no user features to swap (its delta is 0 by design)")
    if split == "train":
        items = train_samples(cfg, data.bench)
    else:
        items = data.bench.samples(split)
    if cfg.probe.max_samples and len(items) > cfg.probe.max_samples:  # a seeded subset
        pick = np.random.default_rng(cfg.seed).choice(len(items), cfg.probe.max_samples, False)
        items = [items[i] for i in sorted(pick)]
    n = cfg.evaluate.nll_target_tokens
    key = fingerprint(
        PROBE_FORMAT,
        adapter.key(),
        split,
        [s.sample_id for s in items],
        asdict(cfg.probe),
        n,
        cfg.seed,
    )
    stage = Stage(cfg.run_path / "probe", f"{name}-{split}")
    if stage.is_done(key):
        return stage
    t0 = time.time()
    be = backends.local
    inj = injector(m, backends)
    ctx = data.context(cfg, spec.needs, lambda t: 0)
    P = m.prompts(items, ctx)
    prompts = [be.encode(c, True) for c in P.conversations]
    targets = [target_ids(be.tokenizer, data.bench.texts[s.target], n) for s in items]
    filled = P.features["mask"].sum(1)
    donors = pick_donors([s.user_id for s in items], filled, cfg.probe.donors, cfg.seed)
    ad = load_adapter(adapter.path("best"), be.device).eval()
    own, other = swap_probe(
        be.model,
        be.tokenizer.pad_token_id,
        ad,
        inj,
        m.kind,
        prompts,
        targets,
        P.features,
        donors,
        desc=f"probe {name}-{split}",
    )
    summary = summarize_swap(own, other, cfg.evaluate.bootstrap, cfg.seed)
    summary.update({"method": name, "split": split})
    table = pa.table(
        {
            "sample_id": [s.sample_id for s in items],
            "user_id": [s.user_id for s in items],
            "own": own,
            "donors": [row[np.isfinite(row)].tolist() for row in other],
            "donor_samples": [[items[j].sample_id for j in d] for d in donors],
        }
    )
    with atomic_path(stage.path("probe.parquet")) as tmp:
        pq.write_table(table, tmp)
    write_json(stage.path("summary.json"), summary)
    stage.finish(
        key,
        {"method": name, "split": split, "probe": asdict(cfg.probe)},
        ["probe.parquet", "summary.json"],
        seconds=round(time.time() - t0, 2),
        summary=summary,
    )
    return stage


def probe_summary(stage: Stage) -> dict[str, Any]:
    return read_json(stage.path("summary.json"))
