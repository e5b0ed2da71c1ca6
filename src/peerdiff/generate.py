"""Predictions: run a method's conversations through a backend into resumable JSONL.

Each line is ``{sample_id, split, method, prompt_hash, gen_key, text, raw}``. Lines are
appended (and fsynced) chunk by chunk; a re-run keeps every line whose prompt and generation
settings still match and generates only the rest, so an interrupted run resumes where it
stopped and ends with the same file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from peerdiff.backends.base import ChatBackend, GenParams, Message
from peerdiff.data.schema import Sample
from peerdiff.methods.prompts import strip_prefix
from peerdiff.stage import atomic_path, fingerprint


def prompt_hash(conversation: Any) -> str:
    return fingerprint(conversation)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_bytes().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            if i >= len(lines) - 2:  # only the final line may be torn
                break
            raise ValueError(f"{path}:{i + 1}: malformed JSON line") from None
    return out


def write_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def chat_fn(
    backend: ChatBackend, conversations: Sequence[list[Message]], params: GenParams, desc: str = ""
) -> Callable[[list[int]], list[str]]:
    """A ``generate`` callable for :func:`run_predictions` from a chat backend."""
    return lambda idx: backend.chat([conversations[i] for i in idx], params, desc=desc)


def run_predictions(
    method: str,
    samples: Sequence[Sample],
    conversations: Sequence[list[Message]],
    generate: Callable[[list[int]], list[str]],
    out_path: str | Path,
    gen_key: str,
    chunk: int = 32,
    postprocess: Callable[[str], str] = strip_prefix,
) -> list[dict]:
    """Generate (or reuse) one prediction per sample.

    Args:
        generate: sample indices -> raw generations (a backend call; see :func:`chat_fn`).
        gen_key: identity of the model and generation settings; records made under another
            key are regenerated.
        chunk: samples per append (the unit of progress kept after an interruption).

    Returns:
        Records in the order of ``samples``.
    """
    out_path = Path(out_path)
    hashes = [prompt_hash(c) for c in conversations]
    old = {r["sample_id"]: r for r in read_jsonl(out_path)}
    valid = {
        s.sample_id: old[s.sample_id]
        for s, h in zip(samples, hashes)
        if s.sample_id in old
        and old[s.sample_id].get("prompt_hash") == h
        and old[s.sample_id].get("gen_key") == gen_key
    }
    if len(valid) != len(old):  # drop stale lines before appending new ones
        write_jsonl(out_path, list(valid.values()))
    todo = [i for i, s in enumerate(samples) if s.sample_id not in valid]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), chunk):
        idx = todo[start : start + chunk]
        raws = generate(idx)
        recs = [
            {
                "sample_id": samples[i].sample_id,
                "split": samples[i].split,
                "method": method,
                "prompt_hash": hashes[i],
                "gen_key": gen_key,
                "text": postprocess(raw),
                "raw": raw,
            }
            for i, raw in zip(idx, raws)
        ]
        with open(out_path, "ab") as f:
            f.write(b"".join(orjson.dumps(r) + b"\n" for r in recs))
            f.flush()
            os.fsync(f.fileno())
        for r in recs:
            valid[r["sample_id"]] = r
    ordered = [valid[s.sample_id] for s in samples]
    write_jsonl(out_path, ordered)  # final file in sample order, identical across resumes
    return ordered
