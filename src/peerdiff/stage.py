"""Atomic files and stage manifests.

A stage writes its outputs into ``<run_dir>/<stage>/`` through :func:`atomic_path`
(temp file + ``os.replace``), then records ``manifest.json`` last. The manifest holds a
*key*: a hash of the stage's config and of its inputs' manifest keys. A stage whose
manifest key matches, with every output present, is skipped; a changed config or input
changes the key and recomputes only what depends on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from peerdiff import __version__


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (dict key order does not matter)."""
    blob = orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (sha256, first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()[:16]


def source_fingerprint(path: str | Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Identity of an input file by its content: ``{"digest", "path", "size", "mtime_ns"}``.

    Only ``digest`` (:func:`file_digest`) goes into keys, so a copy, a move or a
    re-provisioned file with a fresh modification time recomputes nothing, and a changed
    content always does. ``known`` (what a stage recorded before): its digest is reused while
    the path, size and modification time still match, so an unchanged large file is not
    read again.
    """
    p = str(Path(path).resolve())
    st = os.stat(p)
    now = {"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if known and known.get("digest") and all(known.get(k) == v for k, v in now.items()):
        return dict(known)
    return {"digest": file_digest(p), **now}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)
_STARTED = time.time()  # temp files older than this process belong to a run that was killed


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files (``.*.tmp``, files or folders) that a killed run left under
    ``directory``: only those last written before this process started, so a writer still at
    work in the same folder keeps its own. Returns what was removed."""
    removed = []
    for p in sorted(Path(directory).rglob(".*.tmp")):
        try:
            if p.lstat().st_mtime >= _STARTED:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.
    The file gets the mode a plain ``open`` would give it (the umask's), not mkstemp's 0600,
    so a shared run directory stays readable as the user's umask intends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir():  # pragma: no cover - we only write files
            raise RuntimeError("atomic_path expects a file")
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str))


def read_json(path: str | Path) -> Any:
    return orjson.loads(Path(path).read_bytes())


@dataclass
class Stage:
    """One stage's directory and manifest."""

    run_dir: Path
    name: str

    @property
    def dir(self) -> Path:
        return Path(self.run_dir) / self.name

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def path(self, name: str) -> Path:
        return self.dir / name

    def manifest(self) -> dict[str, Any] | None:
        try:
            return read_json(self.manifest_path)
        except (FileNotFoundError, json.JSONDecodeError, orjson.JSONDecodeError):
            return None

    def key(self) -> str | None:
        m = self.manifest()
        return None if m is None else m.get("key")

    def is_done(self, key: str) -> bool:
        """True when the manifest has this key and all recorded outputs still exist."""
        m = self.manifest()
        if m is None or m.get("key") != key:
            return False
        return all((self.dir / f).exists() for f in m.get("outputs", []))

    def finish(self, key: str, config: Any, outputs: list[str], **extra: Any) -> dict[str, Any]:
        """Record completion; call after every output was written atomically. Temp files that
        a killed earlier attempt left in the stage's folder are removed here."""
        remove_stale_temps(self.dir)
        manifest = {
            "stage": self.name,
            "key": key,
            "config": config,
            "outputs": outputs,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": {"peerdiff": __version__, "python": platform.python_version()},
            **extra,
        }
        write_json(self.manifest_path, manifest)
        return manifest

    def invalidate(self) -> None:
        self.manifest_path.unlink(missing_ok=True)
