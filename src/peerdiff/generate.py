"""Predictions: run a method's conversations through a backend into resumable JSONL.

Each line is ``{sample_id, split, method, prompt_hash, gen_key, text, raw}``. Lines are
appended (and fsynced) chunk by chunk; a re-run keeps every line whose prompt and generation
settings still match and generates only the rest, so an interrupted run resumes where it
stopped and ends with the same file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from peerdiff.backends.base import (
    ChatBackend,
    Completion,
    GenParams,
    Message,
    answer_problem,
    arrange,
    strip_reasoning,
)
from peerdiff.data.schema import Sample
from peerdiff.errors import DataError
from peerdiff.methods.prompts import strip_prefix
from peerdiff.stage import atomic_path, fingerprint


def prompt_hash(conversation: Any, inputs: str | None = None) -> str:
    """Identity of one prompt: its conversation, plus ``inputs`` (the identity of whatever
    else the model reads for it: a soft prompt's adapter and user features)."""
    return fingerprint(conversation) if inputs is None else fingerprint(conversation, inputs)


def row_digests(adapter_key: str | None, features: dict[str, Any]) -> list[str]:
    """Per-row identity of a soft-prompt method's inputs beside the prompt text: the adapter
    (its stage key) and the row's feature arrays, bit for bit."""
    import hashlib

    import numpy as np

    names = sorted(features)
    n = len(features[names[0]]) if names else 0
    out = []
    for i in range(n):
        h = hashlib.sha256(str(adapter_key).encode())
        for k in names:
            row = np.ascontiguousarray(features[k][i])
            h.update(f"{k}:{row.dtype}:{row.shape}".encode())
            h.update(row.tobytes())
        out.append(h.hexdigest()[:16])
    return out


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
            raise DataError(
                f"{path}:{i + 1}: malformed JSON line (not written by an interrupted run: "
                "edited or corrupted); delete the file to regenerate it"
            ) from None
    return out


def _torn(path: Path) -> bool:
    """True when ``path`` ends inside a line (a kill during an append)."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except (FileNotFoundError, OSError):  # missing or empty
        return False


def write_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def chat_fn(
    backend: ChatBackend,
    conversations: Sequence[list[Message]],
    params: GenParams,
    desc: str = "",
    instructions: str = "system",
) -> Callable[[list[int]], list[Completion]]:
    """A ``generate`` callable for :func:`run_predictions` from a chat backend (completions
    with their finish reasons; conversations arranged as the backend wants them)."""

    def generate(idx: list[int]) -> list[Completion]:
        convs = [arrange(conversations[i], instructions) for i in idx]
        if hasattr(backend, "complete"):
            return backend.complete(convs, params, desc=desc)
        return [Completion(t) for t in backend.chat(convs, params, desc=desc)]

    return generate


def final_text(raw: str) -> str:
    """A prediction's text: reasoning dropped (unfinished thinking gives ``""``), then a
    leading ``[Review]:`` label."""
    return strip_prefix(strip_reasoning(raw))


def resumable_chunk(backend) -> int:
    """Items per resumable append for ``backend``: at least one of its batches (``batch_size``)
    or rounds of concurrent requests (``concurrency``), so that an append never splits one."""
    return max(32, getattr(backend, "batch_size", 0), getattr(backend, "concurrency", 0))


def cached_generate(
    ids: Sequence[str],
    conversations: Sequence[list[Message]],
    generate: Callable[[list[int]], list[str] | list[Completion]],
    path: str | Path,
    gen_key: str,
    chunk: int = 32,
    extra: Callable[[int], dict] | None = None,
    postprocess: Callable[[str], str] | None = None,
    inputs: Sequence[str] | None = None,
) -> list[dict]:
    """Generate (or reuse) one output per id, appending chunk by chunk to ``path``.

    Args:
        generate: indices into ``conversations`` -> raw generations (text or
            :class:`Completion`: its separate reasoning and finish reason are kept).
        gen_key: identity of the backend and generation settings; lines made under another
            key, or for another prompt, are regenerated.
        chunk: items per append (the unit of progress kept after an interruption).
        extra: index -> additional fields stored in the record.
        postprocess: raw text -> the record's ``text`` field.
        inputs: per id, the identity of what the model reads besides the conversation (a
            soft prompt's adapter and features, :func:`row_digests`): a line is reused only
            when these match too, so a retrained adapter never keeps its predecessor's
            predictions.

    Returns:
        Records (``sample_id``, ``prompt_hash``, ``gen_key``, ``raw``, ...) in ``ids`` order.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a rewrite killed half-way
        stale.unlink(missing_ok=True)
    hashes = [
        prompt_hash(c, None if inputs is None else inputs[n]) for n, c in enumerate(conversations)
    ]
    old = {r["sample_id"]: r for r in read_jsonl(path)}
    valid = {
        i: old[i]
        for i, h in zip(ids, hashes)
        if i in old and old[i].get("prompt_hash") == h and old[i].get("gen_key") == gen_key
    }
    if len(valid) != len(old) or _torn(path):  # drop stale or torn lines before appending
        write_jsonl(path, list(valid.values()))
    todo = [n for n, i in enumerate(ids) if i not in valid]
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), chunk):
        idx = todo[start : start + chunk]
        raws = generate(idx)
        recs = []
        for n, raw in zip(idx, raws):
            c = raw if isinstance(raw, Completion) else Completion(raw)
            r = {
                "sample_id": ids[n],
                **(extra(n) if extra else {}),
                "prompt_hash": hashes[n],
                "gen_key": gen_key,
            }
            if postprocess is not None:
                r["text"] = postprocess(c.text)
            r["raw"] = c.text
            if c.reasoning:
                r["reasoning"] = c.reasoning
            r["finish_reason"] = c.finish_reason
            recs.append(r)
        with open(path, "ab") as f:
            f.write(b"".join(orjson.dumps(r) + b"\n" for r in recs))
            f.flush()
            os.fsync(f.fileno())
        for r in recs:
            valid[r["sample_id"]] = r
    ordered = [valid[i] for i in ids]
    write_jsonl(path, ordered)  # final file in id order, identical across resumes
    return ordered


def run_predictions(
    method: str,
    samples: Sequence[Sample],
    conversations: Sequence[list[Message]],
    generate: Callable[[list[int]], list[str]],
    out_path: str | Path,
    gen_key: str,
    chunk: int = 32,
    postprocess: Callable[[str], str] = final_text,
    inputs: Sequence[str] | None = None,
    scores: Callable[[int], dict] | None = None,
) -> list[dict]:
    """One prediction per sample (``{sample_id, split, method, ..., text, raw}``), resumable.
    ``inputs``: see :func:`cached_generate`; ``scores``: index -> fields computed with the
    generation (the target NLL of the same prefill), stored in the line so that a resumed
    run keeps them."""
    return cached_generate(
        [s.sample_id for s in samples],
        conversations,
        generate,
        out_path,
        gen_key,
        chunk,
        extra=lambda n: {
            "split": samples[n].split,
            "method": method,
            **(scores(n) if scores else {}),
        },
        postprocess=postprocess,
        inputs=inputs,
    )


@dataclass
class Caller:
    """Cached, role-routed LLM calls of a multi-step method (one JSONL per step).

    Each call's completion is checked (:func:`answer_problem`): one with unfinished
    thinking, without an answer, or (reasoning backends only) cut at the token budget is
    retried once (seed + 1, cached in
    ``<step>.retry.jsonl``) and, if it fails again, returned as ``None`` -- recorded as
    missing, never passed on. :attr:`stats` counts calls, failures and missing answers per
    step.

    Args:
        directory: where ``<step>.jsonl`` files go (``calls/<method>-<split>/``).
        backends: a :class:`peerdiff.backends.Backends` (roles -> backends, identities).
        params: base generation settings; each call sets its own budget.
    """

    directory: Path
    backends: Any
    params: GenParams
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def __call__(
        self,
        step: str,
        role: str,
        ids: Sequence[str],
        conversations: Sequence[list[Message]],
        max_new_tokens: int,
    ) -> list[str | None]:
        backend = self.backends.role(role)
        how = self.backends.role_config(role).instructions
        p = replace(self.params, max_new_tokens=self.backends.budget(role, max_new_tokens))
        who = self.backends.role_identity(role)
        chunk = resumable_chunk(backend)
        recs = cached_generate(
            ids,
            conversations,
            chat_fn(backend, conversations, p, step, how),
            self.directory / f"{step}.jsonl",
            fingerprint(who, asdict(p)),
            chunk,
        )
        thinks = self.backends.role_config(role).reasoning
        bad = [n for n, r in enumerate(recs) if _problem(r, thinks)]
        if bad:
            q = replace(p, seed=p.seed + 1)
            again = cached_generate(
                [ids[n] for n in bad],
                [conversations[n] for n in bad],
                chat_fn(backend, [conversations[n] for n in bad], q, f"{step} (retry)", how),
                self.directory / f"{step}.retry.jsonl",
                fingerprint(who, asdict(q)),
                chunk,
            )
            for n, r in zip(bad, again):
                recs[n] = r
        usable = [_problem(r, thinks) is None for r in recs]
        missing = usable.count(False)
        self.stats[step] = {
            "calls": len(recs),
            "failed": len(bad),
            "recovered_by_retry": len(bad) - missing,
            "missing": missing,
        }
        return [strip_reasoning(r["raw"]) if ok else None for r, ok in zip(recs, usable)]


def _problem(rec: dict, reasoning: bool) -> str | None:
    return answer_problem(
        Completion(rec["raw"], rec.get("reasoning", ""), rec.get("finish_reason", "stop")),
        reasoning,
    )


def soft_generate_fn(
    backend,
    injector,
    adapter,
    prompts: Sequence[list[int]],
    features: dict,
    params: GenParams,
    desc: str = "generate",
) -> Callable[[list[int]], list[str]]:
    """A ``generate(indices)`` callable for soft-prompt generation: ``adapter`` turns the
    features of those rows into soft tokens placed at the prompts' placeholders."""
    from peerdiff.model.adapters import soft_fn

    tokens = soft_fn(adapter, features, backend.device)

    def generate(idx: list[int]) -> list[str]:
        def soft(j: list[int]):
            return tokens([idx[x] for x in j])

        return backend.generate_soft([prompts[i] for i in idx], soft, injector, params, desc)

    return generate
