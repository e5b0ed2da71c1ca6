"""Shared fixtures: tiny local models (no downloads) and small review files (built by
:mod:`helpers`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    DIGITAL_MUSIC,
    SHARED_DATA,
    char_tokenizer,
    make_tiny_encoder,
    synthetic_overrides,
    tiny_llama,
    write_synthetic_amazon23,
)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """(model, tokenizer, folder): a 2-layer random Llama saved with its tokenizer."""
    tok = char_tokenizer()
    model = tiny_llama(len(tok))
    d = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return model, tok, d


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A 2-layer random BERT with a word-level tokenizer, saved as a local model folder."""
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


def pytest_collection_modifyitems(items):
    """Tests that read ../shared/data carry the ``real`` marker (``-m "not real"`` skips them)."""
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real)


@pytest.fixture
def real_data():
    if not (DIGITAL_MUSIC / "Digital_Music.jsonl.gz").exists():
        pytest.skip(f"bundled data not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    return write_synthetic_amazon23(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def synthetic_bench(synthetic_root, tmp_path_factory):
    """A prepared benchmark of the synthetic data (small preset)."""
    from peerdiff.config import load_config
    from peerdiff.data.benchmark import Benchmark
    from peerdiff.stages.prepare import prepare_benchmark as prepare

    run = tmp_path_factory.mktemp("synthetic_run")
    cfg = load_config(None, synthetic_overrides(synthetic_root, run))
    return Benchmark(prepare(cfg.data, run).dir)


# A small graph on tiny models: settings the stage, hub and data tests share.
