"""Device choice: ``auto`` tries cuda, then mps, then cpu, and says why."""

from __future__ import annotations

import logging

import torch

from peerdiff.errors import ConfigError

log = logging.getLogger(__name__)


def pick_device(pref: str = "auto") -> torch.device:
    """The device named by ``pref``; ``auto`` picks the first of cuda, mps, cpu that works."""
    if pref != "auto":
        dev = torch.device(pref)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but CUDA is not available")
        return dev
    if torch.cuda.is_available():
        import os

        rank = int(os.environ.get("LOCAL_RANK", "0"))  # one GPU per process (accelerate launch)
        log.info("device: cuda:%d (%s)", rank, torch.cuda.get_device_name(rank))
        return torch.device(f"cuda:{rank}")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        log.info("device: mps")
        return torch.device("mps")
    log.info("device: cpu (no CUDA or MPS available)")
    return torch.device("cpu")
