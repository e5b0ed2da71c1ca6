"""Training curves to TensorBoard and/or Weights & Biases, behind one switch (``train.log_to``).

:func:`make_logger` returns an object with ``scalars(step, **values)`` and ``close()``; with
nothing to log to it is a do-nothing logger, so the training loop never branches on it.
TensorBoard event files go to ``train/<method>/tensorboard/`` (``tensorboard --logdir
runs/<name>/train``); W&B runs offline into ``train/<method>/wandb/`` unless
``WANDB_API_KEY`` is set. A resumed run purges the steps of the epoch that was cut off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from peerdiff.errors import DependencyError


class Logger(Protocol):
    def scalars(self, step: int, **values: float) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def scalars(self, step: int, **values: float) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    def __init__(self, directory: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise DependencyError(
                "train.log_to: tensorboard needs `pip install peerdiff[tensorboard]`"
            ) from e
        self.writer = SummaryWriter(str(directory), purge_step=purge_step)

    def scalars(self, step: int, **values: float) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, directory: Path, name: str, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as e:
            raise DependencyError("train.log_to: wandb needs `pip install peerdiff[wandb]`") from e
        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "peerdiff"),
            name=name,
            dir=str(directory),
            config=config,
            mode=mode,
            reinit="finish_previous",  # one run per trained method, in turn
        )

    def scalars(self, step: int, **values: float) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class FanOut:
    def __init__(self, loggers: list) -> None:
        self.loggers = loggers

    def scalars(self, step: int, **values: float) -> None:
        for lg in self.loggers:
            lg.scalars(step, **values)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_loggers(kinds: list[str]) -> None:
    """Raise before any work when a configured logger's package is missing (a run found out
    at its first training stage, minutes in).

    Raises:
        DependencyError: names the extra to install.
    """
    import importlib.util

    for k in kinds:
        if k in _PACKAGES and importlib.util.find_spec(_PACKAGES[k]) is None:
            raise DependencyError(
                f"train.log_to: {k} needs `pip install peerdiff[{k}]` (or drop it: train.log_to=[])"
            )


def make_logger(
    kinds: list[str],
    directory: Path,
    name: str,
    config: dict[str, Any],
    purge_step: int | None = None,
) -> Logger:
    """A logger writing to each of ``kinds`` (``tensorboard``, ``wandb``); none: a null logger."""
    loggers: list = []
    for k in kinds:
        if k == "tensorboard":
            loggers.append(TensorBoardLogger(directory / "tensorboard", purge_step))
        elif k == "wandb":
            loggers.append(WandbLogger(directory / "wandb", name, config))
    if not loggers:
        return NullLogger()
    return loggers[0] if len(loggers) == 1 else FanOut(loggers)
