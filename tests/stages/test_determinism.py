"""Same config, same thread count: bit-identical vectors, contrast, adapters and greedy outputs."""

import copy

import torch
from helpers import TINY_RUN as SMALL
from helpers import synthetic_overrides

from peerdiff.backends import Backends
from peerdiff.backends.hf import HFBackend
from peerdiff.config import load_config
from peerdiff.runner import run
from peerdiff.stage import read_json


def test_two_runs_write_identical_bytes(tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path):
    model, tok, _ = tiny_lm
    torch.set_num_threads(2)
    dirs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        cfg = load_config(
            None,
            [
                *synthetic_overrides(synthetic_root, d),
                *SMALL,
                "methods=[nonperso,dep]",
                "probe.splits=[]",
                f"embed.model={tiny_encoder_dir}",
                f"cache_dir={d / 'cache'}",  # no shared vector cache: embedding runs twice
            ],
        )
        local = HFBackend(model, copy.deepcopy(tok), batch_size=4)
        run(cfg, backends=Backends(cfg, local=local))
        dirs.append(d)
    a, b = dirs
    for f in (
        "embed/vectors.npy",
        "contrast/diff.npy",
        "contrast/slots.npy",
        "train/dep/best/adapter.safetensors",
        "train/dep/epoch-1/adapter.safetensors",
        "generate/nonperso-test-n4/predictions.jsonl",
        "generate/dep-test-n4/predictions.jsonl",
        "nll/dep-test-n4/nll.parquet",
    ):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_nll_from_the_generation_prefill_equals_the_separate_pass(
    tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path
):
    """``generate`` writes the NLL stage from its own prefill; deleting that stage makes
    ``likelihood`` compute it apart: same per-sample sums (float rounding), for a token
    method and a soft-prompt method."""
    import shutil

    import numpy as np
    import pyarrow.parquet as pq

    from peerdiff import stages

    model, tok, _ = tiny_lm
    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, tmp_path),
            *SMALL,
            "methods=[nonperso,dep]",
            "probe.splits=[]",
            f"embed.model={tiny_encoder_dir}",
        ],
    )
    run(cfg, backends=Backends(cfg, local=HFBackend(model, copy.deepcopy(tok), batch_size=4)))
    be = Backends(cfg, local=HFBackend(model, copy.deepcopy(tok), batch_size=4))
    data = stages.data(cfg, ["nonperso", "dep"])
    adapter = stages.train(cfg, "dep", data, be)  # done: loaded
    for name in ("nonperso", "dep"):
        st = cfg.run_path / "nll" / f"{name}-test-n4"
        assert read_json(st / "manifest.json")["with_generation"] is True
        merged = pq.read_table(st / "nll.parquet").to_pydict()
        shutil.rmtree(st)
        ad = adapter if name == "dep" else None
        again = stages.likelihood(cfg, name, "test", data, be, ad)
        apart = pq.read_table(again.path("nll.parquet")).to_pydict()
        assert again.manifest()["with_generation"] is False
        assert merged["sample_id"] == apart["sample_id"] and len(merged["sample_id"]) > 0
        assert merged["nll_tokens"] == apart["nll_tokens"]
        np.testing.assert_allclose(
            merged["nll_sum"], apart["nll_sum"], rtol=1e-5, atol=1e-4, err_msg=name
        )
