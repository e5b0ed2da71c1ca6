"""Device choice: auto falls back to the CPU here; asking for CUDA without one is an error."""

import pytest
import torch

from peerdiff.device import auto_dtype, pick_device


def test_auto_and_explicit_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_auto_dtype_is_bfloat16_on_cuda_only():
    """Not on an AMX CPU either: its bfloat16 products round with the batch's row count."""
    assert auto_dtype(torch.device("cuda")) == torch.bfloat16
    assert auto_dtype(torch.device("cpu")) == torch.float32
    assert auto_dtype(torch.device("mps")) == torch.float32


def test_stage_keys_record_the_resolved_dtype(monkeypatch):
    """``auto`` is recorded as what it computes in, so a run directory moved between a GPU
    and a CPU recomputes instead of mixing numbers."""
    from peerdiff.backends import Backends
    from peerdiff.config import load_config
    from peerdiff.model import llm

    for dev, want in ((torch.device("cuda"), "bfloat16"), (torch.device("cpu"), "float32")):
        llm.dtype_name.cache_clear()
        monkeypatch.setattr(llm, "pick_device", lambda pref, dev=dev: dev)
        assert Backends(load_config(None, [])).identity("local")["dtype"] == want
        cfg = load_config(None, ["llm.dtype=float32"])
        assert Backends(cfg).identity("local")["dtype"] == "float32"
    llm.dtype_name.cache_clear()
    # a named device needs no such device here: keys of a GPU run compute on a CPU
    cfg = load_config(None, ["llm.device=cuda"])
    assert Backends(cfg).identity("local")["dtype"] == "bfloat16"


def test_training_precision_auto_follows_the_hardware_and_named_values_stay(monkeypatch):
    import peerdiff.device as device

    assert device.training_precision("float32", "cpu") == "float32"
    assert device.training_precision("bfloat16", "cpu") == "bfloat16"
    assert device.training_precision("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(device, "cpu_bf16_units", lambda: True)
    assert device.training_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(device, "cpu_bf16_units", lambda: False)
    assert device.training_precision("auto", "cpu") == "float32"


def test_auto_precision_shares_the_stage_key_of_what_it_resolves_to(monkeypatch):
    import peerdiff.device as device
    from peerdiff.config import load_config
    from peerdiff.stages.train import train_settings

    monkeypatch.setattr(device, "cpu_bf16_units", lambda: False)
    auto = train_settings(load_config(None, ["train.precision=auto", "llm.device=cpu"]), "dep")
    fp32 = train_settings(load_config(None, ["llm.device=cpu"]), "dep")
    assert auto == fp32 and auto["precision"] == "float32"
