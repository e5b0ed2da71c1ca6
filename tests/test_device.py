"""Device choice: auto falls back to the CPU here; asking for CUDA without one is an error."""

import pytest
import torch

from peerdiff import device
from peerdiff.device import auto_dtype, pick_device


def test_auto_and_explicit_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_auto_dtype_is_bfloat16_only_where_the_hardware_multiplies_it(monkeypatch):
    monkeypatch.setattr(device, "cpu_bf16_matmul", lambda: True)
    assert auto_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(device, "cpu_bf16_matmul", lambda: False)
    assert auto_dtype(torch.device("cpu")) == torch.float32
    assert auto_dtype(torch.device("cuda")) == torch.bfloat16
    assert auto_dtype(torch.device("mps")) == torch.float32


def test_stage_keys_record_the_resolved_dtype(monkeypatch):
    """``auto`` is recorded as what it computes in, so a run directory moved to a machine
    where auto means another dtype recomputes instead of mixing numbers."""
    from peerdiff.backends import Backends
    from peerdiff.config import load_config
    from peerdiff.model import llm

    for amx, want in ((True, "bfloat16"), (False, "float32")):
        llm.dtype_name.cache_clear()
        monkeypatch.setattr(device, "cpu_bf16_matmul", lambda amx=amx: amx)
        cfg = load_config(None, ["llm.device=cpu"])
        assert Backends(cfg).identity("local")["dtype"] == want
        cfg = load_config(None, ["llm.device=cpu", "llm.dtype=float32"])
        assert Backends(cfg).identity("local")["dtype"] == "float32"
    llm.dtype_name.cache_clear()
