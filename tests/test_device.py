"""Device choice: auto falls back to the CPU here; asking for CUDA without one is an error."""

import pytest
import torch

from peerdiff.device import pick_device


def test_auto_and_explicit_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
