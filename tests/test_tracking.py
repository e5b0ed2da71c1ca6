"""Training curves to TensorBoard and W&B (``train.log_to``). W&B is an optional extra and
not installed in the test environment: a stand-in ``wandb`` module records what peerdiff
asks of it (checked against wandb 0.31 by an offline run, see docs/data.md's W&B section)."""

import sys
import types

import pytest

from peerdiff.errors import DependencyError
from peerdiff.tracking import FanOut, NullLogger, make_logger


class FakeRun:
    def __init__(self, **kwargs):
        self.init, self.logged, self.finished = kwargs, [], False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def wandb(monkeypatch):
    module = types.SimpleNamespace(runs=[])

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    return module


def test_wandb_runs_offline_into_the_train_folder_without_a_key(wandb, tmp_path):
    logger = make_logger(["wandb"], tmp_path, "quick-dep", {"method": "dep", "lr": 1e-3})
    logger.scalars(1, **{"train/loss": 3.5})
    logger.scalars(2, **{"train/loss": 3.25, "train/lr": 1e-4})
    logger.close()
    (run,) = wandb.runs
    assert run.init == {
        "project": "peerdiff",
        "name": "quick-dep",
        "dir": str(tmp_path / "wandb"),
        "config": {"method": "dep", "lr": 1e-3},
        "mode": "offline",
        "reinit": "finish_previous",
    }
    assert (tmp_path / "wandb").is_dir()
    assert run.logged == [(1, {"train/loss": 3.5}), (2, {"train/loss": 3.25, "train/lr": 1e-4})]
    assert run.finished


def test_wandb_goes_online_with_a_key_and_obeys_its_environment(wandb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    make_logger(["wandb"], tmp_path, "n", {})
    monkeypatch.setenv("WANDB_MODE", "disabled")
    make_logger(["wandb"], tmp_path, "n", {})
    assert [(r.init["mode"], r.init["project"]) for r in wandb.runs] == [
        ("online", "mine"),
        ("disabled", "mine"),
    ]


def test_tensorboard_and_wandb_together_and_neither(wandb, tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    both = make_logger(["tensorboard", "wandb"], tmp_path, "n", {})
    assert isinstance(both, FanOut)
    both.scalars(1, loss=2.0)
    both.close()
    assert wandb.runs[0].logged == [(1, {"loss": 2.0})] and wandb.runs[0].finished
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert isinstance(make_logger([], tmp_path, "n", {}), NullLogger)


def test_wandb_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(DependencyError, match=r"pip install peerdiff\[wandb\]"):
        make_logger(["wandb"], tmp_path, "n", {})


def test_a_missing_logger_package_stops_a_run_before_any_method(
    tmp_path, monkeypatch, synthetic_root, tiny_encoder_dir
):
    """Checked once the data stages are there, before any method generates or trains; a run
    whose adapters are all trained needs no logger."""
    import importlib
    import importlib.util

    from helpers import synthetic_overrides

    from peerdiff import stages
    from peerdiff.config import load_config
    from peerdiff.errors import DependencyError
    from peerdiff.runner import run

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a)
    )
    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, tmp_path / "run"),
            f"embed.model={tiny_encoder_dir}",
            "methods=[nonperso,constant]",
            "train.log_to=[tensorboard]",
        ],
    )
    with pytest.raises(DependencyError, match=r"peerdiff\[tensorboard\]"):
        run(cfg)
    assert not (tmp_path / "run" / "generate").exists()  # Non-Perso did not start
    data = stages.data(cfg, ["constant"])
    monkeypatch.setattr(
        importlib.import_module("peerdiff.stage").Stage, "is_done", lambda s, k: True
    )
    stages.check_loggers_for(cfg, ["nonperso", "constant"], data)  # all trained: no error
