"""Same config, same thread count: bit-identical vectors, contrast, adapters and greedy outputs."""

import copy

import torch
from conftest import TINY_RUN as SMALL
from conftest import synthetic_overrides

from peerdiff.backends import Backends
from peerdiff.backends.hf import HFBackend
from peerdiff.config import load_config
from peerdiff.runner import run


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
        "generate/nonperso-test/predictions.jsonl",
        "generate/dep-test/predictions.jsonl",
        "nll/dep-test/nll.parquet",
    ):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
