"""Stage 6, ``likelihood``: the target NLL per sample under the method's exact prompt
(``nll/<method>-<split>``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from peerdiff.backends import Backends
from peerdiff.config import RunConfig
from peerdiff.stage import Stage, atomic_path
from peerdiff.stages.common import MethodSplit
from peerdiff.stages.data import Data


def likelihood(
    cfg: RunConfig,
    name: str,
    split: str,
    data: Data,
    backends: Backends,
    adapter: Stage | None = None,
    gen: Stage | None = None,
) -> Stage | None:
    """Target NLL per sample under the method's exact prompt.

    ``None`` when the method's generator runs on a server (no likelihoods there). When
    ``gen`` (the method's generate stage) scored the targets in its prefill for this very
    key, the sums come from its lines; otherwise a forward pass computes them.
    """
    from peerdiff.model.adapters import soft_fn
    from peerdiff.model.lm import target_nll

    ms = MethodSplit(cfg, name, split, data, backends, adapter)
    plan = ms.nll_plan()
    if plan is None:
        return None
    stage, key, scorer = plan
    if stage.is_done(key):
        return stage
    t0 = time.time()
    n = cfg.evaluate.nll_target_tokens
    prompts = ms.encoded(scorer)
    targets = ms.targets(scorer.tokenizer, n)
    counts = np.array([len(t) for t in targets], dtype=np.int64)
    sums = _sums_from(gen, key, ms.items)
    with_generation = sums is not None
    if sums is None:
        kw: dict[str, Any] = {}
        if ms.soft:
            P = ms.prompts(scorer)
            kw = {"soft": soft_fn(ms.load_adapter(scorer.device), P.features, scorer.device)}
            kw["injector"] = ms.injector()
        sums, counts = target_nll(
            scorer.model,
            scorer.tokenizer.pad_token_id,
            prompts,
            targets,
            batch_size=cfg.evaluate.nll_batch_size,
            desc=f"nll {name}",
            **kw,
        )
    table = pa.table(
        {"sample_id": [s.sample_id for s in ms.items], "nll_sum": sums, "nll_tokens": counts}
    )
    with atomic_path(stage.path("nll.parquet")) as tmp:
        pq.write_table(table, tmp)
    stage.finish(
        key,
        {"method": name, "split": split, "nll_target_tokens": n},
        ["nll.parquet"],
        seconds=round(time.time() - t0, 2),
        prompt_tokens_mean=round(float(np.mean([len(p) for p in prompts])), 1) if prompts else 0,
        nll=float(np.mean(sums / np.maximum(counts, 1))) if len(sums) else None,
        with_generation=with_generation,
    )
    return stage


def _sums_from(gen: Stage | None, key: str, items: list) -> np.ndarray | None:
    """The NLL sums the generate stage kept on its lines for ``key``, in ``items``' order;
    ``None`` unless every sample has one."""
    from peerdiff.generate import read_jsonl

    m = (gen.manifest() or {}) if gen is not None else {}
    if not (m.get("nll_in_same_pass") and m.get("nll_key") == key):
        return None
    by_id = {
        r["sample_id"]: r.get("nll_sum")
        for r in read_jsonl(gen.path("predictions.jsonl"))
        if r.get("nll_key") == key
    }
    sums = [by_id.get(s.sample_id) for s in items]
    if any(x is None for x in sums):
        return None
    return np.array(sums, dtype=np.float64)
