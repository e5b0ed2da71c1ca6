"""Device choice: ``auto`` tries cuda, then mps, then cpu, and says why; the dtype ``auto``
means there."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

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


@functools.cache
def cpu_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX tiles).

    There oneDNN runs bfloat16 products on the tile unit, many times the float32 rate
    (docs/benchmarks.md); CPUs without it emulate bfloat16 and gain nothing.
    """
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; flags as fallback
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            pass
    try:
        return " amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@functools.cache
def cpu_bf16_units() -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware: AMX tiles or AVX512-BF16.

    Training under bfloat16 autocast gains from either, AVX512-BF16 without AMX included
    (docs/dep-sweep.md); a CPU without them emulates bfloat16 and loses.
    """
    if cpu_bf16_matmul():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags


def training_precision(precision: str, device: str = "auto") -> str:
    """What ``train.precision`` resolves to with ``llm.device`` on this machine. ``auto``:
    bfloat16 autocast on a GPU and on a CPU with bfloat16 units (:func:`cpu_bf16_units`),
    float32 elsewhere. Stage keys record the resolved name, as they do for ``llm.dtype``."""
    if precision != "auto":
        return precision
    dev = pick_device(device) if device == "auto" else torch.device(device)
    if dev.type == "cuda" or (dev.type == "cpu" and cpu_bf16_units()):
        return "bfloat16"
    return "float32"


def auto_dtype(device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA, float32 elsewhere.

    Not bfloat16 on an AMX CPU, although it runs the quick job faster there: the CPU's
    bfloat16 products round differently with the number of rows, so a greedy output would
    depend on which prompts share its batch, and batch sizes are not part of any stage key.
    ``llm.dtype: bfloat16`` chooses it (figures: docs/benchmarks.md).
    """
    return torch.bfloat16 if device.type == "cuda" else torch.float32
