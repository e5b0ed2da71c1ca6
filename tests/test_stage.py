"""Atomic files, manifests and fingerprints."""

import os

import pytest

import peerdiff.stage as stage_mod
from peerdiff.stage import Stage, atomic_path, fingerprint, read_json, write_json


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint("x", [1, 2]) != fingerprint("x", [2, 1])


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.txt"

    def write_then_crash():
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_then_crash()
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_stage_is_done_only_with_its_key_and_all_outputs(tmp_path):
    st = Stage(tmp_path, "s")
    assert not st.is_done("k") and st.key() is None
    write_json(st.path("a.json"), {"x": 1})
    st.finish("k", {"cfg": 1}, ["a.json"], seconds=1.0)
    assert st.is_done("k") and not st.is_done("other") and st.key() == "k"
    assert read_json(st.manifest_path)["seconds"] == 1.0
    st.path("a.json").unlink()  # an output went missing: recompute
    assert not st.is_done("k")
    st.invalidate()
    assert st.manifest() is None


def test_atomic_files_follow_the_umask(tmp_path):
    """Issue 25, item 12: stage files were 0600 (mkstemp's mode) while Parquet files were
    0644; every file now gets what the umask gives a new file."""
    import os

    from peerdiff.stage import _FILE_MODE, atomic_path

    with atomic_path(tmp_path / "f.json") as tmp:
        tmp.write_text("{}")
    open(tmp_path / "plain", "w").close()
    mode = os.stat(tmp_path / "f.json").st_mode & 0o777
    assert mode == _FILE_MODE == os.stat(tmp_path / "plain").st_mode & 0o777


def test_finish_removes_temps_a_killed_run_left_but_not_a_live_writers(tmp_path):
    st = Stage(tmp_path, "nll")
    st.dir.mkdir()
    (st.dir / "sub").mkdir()
    stale = [st.dir / ".nll.parquet.abc123.tmp", st.dir / "sub" / ".x.json.def.tmp"]
    for p in stale:
        p.write_bytes(b"half")
        os.utime(p, (stage_mod._STARTED - 60, stage_mod._STARTED - 60))
    stale_dir = st.dir / ".best.tmp"
    stale_dir.mkdir()
    os.utime(stale_dir, (stage_mod._STARTED - 60, stage_mod._STARTED - 60))
    live = st.dir / ".nll.parquet.live.tmp"  # written after this process started
    live.write_bytes(b"in progress")
    with atomic_path(st.path("nll.parquet")) as tmp:
        tmp.write_bytes(b"done")
    st.finish("k", {}, ["nll.parquet"])
    assert not any(p.exists() for p in [*stale, stale_dir])
    assert live.exists() and st.is_done("k")


def test_source_fingerprint_hashes_a_file_only_when_it_may_have_changed(tmp_path, monkeypatch):
    f = tmp_path / "reviews.jsonl"
    f.write_text('{"a": 1}\n')
    first = stage_mod.source_fingerprint(f)
    calls = []
    real = stage_mod.file_digest
    monkeypatch.setattr(stage_mod, "file_digest", lambda p: calls.append(p) or real(p))
    assert stage_mod.source_fingerprint(f, first) == first and not calls  # unchanged: reused
    os.utime(f, ns=(1, first["mtime_ns"] + 10**9))
    again = stage_mod.source_fingerprint(f, first)
    assert len(calls) == 1 and again["digest"] == first["digest"]  # touched: same content
