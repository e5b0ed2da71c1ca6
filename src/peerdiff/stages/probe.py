"""Stage 8, ``probe``: the user-swap probe. The target NLL under the user's own features
against other users' features in the same prompt text (> 0: the soft tokens carry the user)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from peerdiff import methods
from peerdiff.backends import Backends
from peerdiff.config import RunConfig
from peerdiff.errors import ConfigError
from peerdiff.stage import Stage, atomic_path, fingerprint, read_json, write_json
from peerdiff.stages.common import PROBE_FORMAT, MethodSplit, require_adapter, train_samples
from peerdiff.stages.data import Data


def probe(
    cfg: RunConfig, name: str, split: str, data: Data, backends: Backends, adapter: Stage
) -> Stage:
    """``peerdiff probe``: own vs ``probe.donors`` other users' features, same prompt text.

    On ``train``, the samples the adapter trained on (memorisation); on ``val``/``test``,
    unseen targets (generalisation).
    """
    from peerdiff.probe import pick_donors, summarize_swap, swap_probe

    require_adapter(name, adapter)
    if not methods.get(name).user_features:
        raise ConfigError(f"{name!r} has no user features to swap (its delta is 0 by design)")
    items = train_samples(cfg, data.bench) if split == "train" else data.bench.samples(split)
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
    ms = MethodSplit(cfg, name, split, data, backends, adapter, items)
    P = ms.prompts(be)  # the likelihood stage's prompts (fitted to the same token budget)
    prompts = ms.encoded(be)
    targets = ms.targets(be.tokenizer, n)
    filled = P.features["mask"].sum(1)
    donors = pick_donors([s.user_id for s in items], filled, cfg.probe.donors, cfg.seed)
    own, other = swap_probe(
        be.model,
        be.tokenizer.pad_token_id,
        ms.load_adapter(be.device),
        ms.injector(),
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
