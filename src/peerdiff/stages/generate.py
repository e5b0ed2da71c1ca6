"""Stage 5, ``generate``: one prediction per sample (resumable JSONL).

When the target NLL is also due and the generator is the local model that scores it, each
prediction line also carries its prompt's NLL sum from the same prefill; the likelihood
stage (:mod:`peerdiff.stages.likelihood`) takes them from there.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from peerdiff.backends import Backends
from peerdiff.config import RunConfig
from peerdiff.stage import Stage, fingerprint
from peerdiff.stages.common import DECODE_FORMAT, MethodSplit, gen_params, require_adapter
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

    When the target NLL is also due (``evaluate.nll``, its stage not done) and the generator
    is the local model that scores it, both come from one prefill of each prompt
    (:meth:`peerdiff.backends.hf.HFBackend.generate_scored`): each line keeps its NLL sum
    and the key of the NLL it belongs to, for :func:`peerdiff.stages.likelihood`.

    Raises:
        MissingStageError: a soft-prompt method whose adapter was not trained.
    """
    from peerdiff.generate import chat_fn, soft_generate_fn
    from peerdiff.model.adapters import soft_fn

    ms = MethodSplit(cfg, name, split, data, backends, adapter)
    if ms.soft:
        require_adapter(name, adapter)
    params = gen_params(cfg)
    gen_key = fingerprint(DECODE_FORMAT, ms.generator_identity(), asdict(params))
    key = fingerprint(ms.key(), gen_key)
    stage = Stage(cfg.run_path / "generate", f"{name}-{ms.tag}")
    if stage.is_done(key):
        return stage
    t0 = time.time()
    generator = ms.generator
    P = ms.prompts(generator)
    plan = ms.nll_plan() if cfg.evaluate.nll else None
    scored = plan is not None and not plan.stage.is_done(plan.key) and plan.scorer is generator
    sums: dict[int, float] = {}
    if ms.soft or scored:
        ids = ms.encoded(generator)
    if scored:
        targets = ms.targets(generator.tokenizer, cfg.evaluate.nll_target_tokens)
    tokens = inj = None
    if ms.soft:
        inj = ms.injector()
        ad = ms.load_adapter(generator.device)
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

    elif ms.soft:
        gen = soft_generate_fn(generator, inj, ad, ids, P.features, params, name)
    else:
        gen = chat_fn(generator, P.conversations, params, name)
    try:
        recs = _predict(ms, P, gen, stage, gen_key, generator, plan, sums, scored)
    finally:
        backends.release_engine()  # a vLLM engine stops here (no-op for the local model)
    if scored:  # lines kept from an interrupted run bring their sums; others: apart
        scored = all(r.get("nll_key") == plan.key and "nll_sum" in r for r in recs)
    extra: dict[str, Any] = {}
    if ms.soft:  # which trained adapter wrote these (model cards list only its scores)
        extra["adapter_key"] = adapter.key()
    if len(ms.spec.roles) > 1:
        extra = {
            "method_stats": P.stats,
            "backends": {r: backends.role_identity(r) for r in ms.spec.roles},
        }
    stage.finish(
        key,
        {"method": name, "split": split, "generate": asdict(cfg.generate)},
        ["predictions.jsonl"],
        seconds=round(time.time() - t0, 2),
        samples=len(recs),
        nll_in_same_pass=scored,
        nll_key=plan.key if scored else None,
        **extra,
    )
    return stage


def _predict(ms, P, gen, stage, gen_key, generator, plan, sums, scored) -> list[dict]:
    """The prediction lines (resumed where an interrupted run left them)."""
    from peerdiff.generate import resumable_chunk, row_digests, run_predictions

    return run_predictions(
        ms.name,
        ms.items,
        P.conversations,
        gen,
        stage.path("predictions.jsonl"),
        gen_key,
        resumable_chunk(generator),
        inputs=row_digests(ms.adapter.key(), P.features) if ms.soft else None,
        # each line keeps its prefill's NLL sum: a resumed run writes the same NLL stage
        scores=(lambda i: {"nll_sum": float(sums[i]), "nll_key": plan.key}) if scored else None,
    )
