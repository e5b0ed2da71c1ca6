"""The training loop: resume after a kill gives the same adapter as an uninterrupted run."""

import copy

import numpy as np
import orjson
import pytest
import torch

from peerdiff.config import TrainConfig
from peerdiff.model.adapters import DEPConfig, build_adapter
from peerdiff.model.inject import Injector, add_placeholders, placeholder_names
from peerdiff.model.lm import Example
from peerdiff.train import Trainer

D = 12


def setup(tiny_lm):
    model, tok, _ = tiny_lm
    tok = copy.deepcopy(tok)
    cfg = DEPConfig(encoder_dim=D, llm_hidden=model.config.hidden_size, slots=2)
    names = placeholder_names(cfg.groups, cfg.slots)
    inj = Injector(model.get_input_embeddings(), add_placeholders(tok, names))
    rng = np.random.default_rng(0)
    n = 10
    feats = {
        "hist": rng.normal(size=(n, 2, D)).astype(np.float32),
        "diff": rng.normal(size=(n, 2, D)).astype(np.float32),
        "mask": np.ones((n, 2), bool),
    }
    ex = [
        Example(
            tok(f"item {i} " + "".join(names))["input_ids"],
            tok(" good" * (1 + i % 3))["input_ids"] + [2],
        )
        for i in range(n)
    ]
    return model, tok, cfg, inj, feats, ex


def trainer(tiny_lm_parts, out, epochs=3):
    model, tok, cfg, inj, _feats, _ex = tiny_lm_parts
    torch.manual_seed(0)
    adapter = build_adapter(cfg)
    tc = TrainConfig(epochs=epochs, batch_size=3, grad_accum=2, warmup_ratio=0.1)
    return Trainer(
        model,
        adapter,
        inj,
        pad_id=tok.pad_token_id,
        cfg=tc,
        lr=1e-2,
        out_dir=out,
        key="k",
        seed=3,
    )


def log_epochs(path) -> list[int]:
    return [orjson.loads(line)["epoch"] for line in path.read_bytes().splitlines() if line]


def test_killed_after_epoch_1_resumes_to_the_same_adapter_bytes(tiny_lm, tmp_path):
    parts = setup(tiny_lm)
    _, _, _, _, feats, ex = parts
    score = lambda adapter: 0.0  # noqa: E731

    full = trainer(parts, tmp_path / "full")
    full.fit(ex, feats, score)

    calls = []

    def dies_in_epoch_2(adapter) -> float:
        calls.append(1)
        if len(calls) == 2:  # epoch 2 trained and saved, then the process "dies"
            raise KeyboardInterrupt("killed")
        return 0.0

    with pytest.raises(KeyboardInterrupt):
        trainer(parts, tmp_path / "cut").fit(ex, feats, dies_in_epoch_2)
    state = orjson.loads((tmp_path / "cut" / "state.json").read_bytes())
    assert [e["epoch"] for e in state["epochs"]] == [1]
    assert 2 in log_epochs(tmp_path / "cut" / "log.jsonl")  # the dead epoch's lines are there

    resumed = trainer(parts, tmp_path / "cut").fit(ex, feats, score)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    for e in (2, 3):
        a = (tmp_path / "full" / f"epoch-{e}" / "adapter.safetensors").read_bytes()
        b = (tmp_path / "cut" / f"epoch-{e}" / "adapter.safetensors").read_bytes()
        assert a == b, f"epoch {e} differs after resume"
    # the log has each epoch's lines once, as an uninterrupted run has
    assert log_epochs(tmp_path / "cut" / "log.jsonl") == log_epochs(tmp_path / "full" / "log.jsonl")


def test_a_finished_run_is_not_retrained_and_another_key_starts_over(tiny_lm, tmp_path):
    parts = setup(tiny_lm)
    _, _, _, _, feats, ex = parts
    trainer(parts, tmp_path, epochs=1).fit(ex, feats)
    before = (tmp_path / "epoch-1" / "adapter.safetensors").stat().st_mtime_ns
    trainer(parts, tmp_path, epochs=1).fit(ex, feats)  # same key: resumes with nothing to do
    assert (tmp_path / "epoch-1" / "adapter.safetensors").stat().st_mtime_ns == before
    t = trainer(parts, tmp_path, epochs=1)
    t.key = "other"
    t.fit(ex, feats)
    assert (tmp_path / "epoch-1" / "adapter.safetensors").stat().st_mtime_ns != before


def test_tensorboard_curves_are_written(tiny_lm, tmp_path):
    pytest.importorskip("tensorboard")
    from dataclasses import replace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    parts = setup(tiny_lm)
    _, _, _, _, feats, ex = parts
    t = trainer(parts, tmp_path, epochs=2)
    t.cfg = replace(t.cfg, log_to=["tensorboard"])
    t.fit(ex, feats, lambda adapter: 0.5)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lm", "train/recon", "train/kl", "train/lr"} <= tags
    assert {"epoch/train_loss", "epoch/val_score"} <= tags
    assert len(acc.Scalars("train/loss")) == 2 * 4  # 10 examples / batch 3 -> 4 batches x 2
    assert [e.value for e in acc.Scalars("epoch/val_score")] == [0.5, 0.5]


def test_no_logging_by_default(tiny_lm, tmp_path):
    parts = setup(tiny_lm)
    trainer(parts, tmp_path, epochs=1).fit(parts[5], parts[4])
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_has_each_step_once_after_a_resume(tiny_lm, tmp_path):
    """Issue 25, item 12: curves after a resume repeated the killed epoch's steps."""
    pytest.importorskip("tensorboard")
    from dataclasses import replace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    parts = setup(tiny_lm)
    _, _, _, _, feats, ex = parts
    calls = []

    def dies_in_epoch_2(adapter) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return 0.5

    t = trainer(parts, tmp_path)
    t.cfg = replace(t.cfg, log_to=["tensorboard"])
    with pytest.raises(KeyboardInterrupt):
        t.fit(ex, feats, dies_in_epoch_2)
    t = trainer(parts, tmp_path)
    t.cfg = replace(t.cfg, log_to=["tensorboard"])
    t.fit(ex, feats, lambda adapter: 0.5)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 3 * 4, steps
    assert [e.step for e in acc.Scalars("epoch/val_score")] == [4, 8, 12]
