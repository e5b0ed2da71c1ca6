"""The protocol on hand-made data, and leakage properties on the bundled data."""

import importlib
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import write_jsonl

from peerdiff.config import Protocol, Source, load_config
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.build import dedup_latest_first, k_core
from peerdiff.errors import DataError
from peerdiff.stages.prepare import prepare_benchmark as prepare

DAY = 86_400


def test_dedup_is_dpl_greedy_newest_first():
    # R1 newest (item X, text T); R2 (item Y, text T) dropped as repeated text, so item Y is
    # not "seen" and R3 (item Y, text U) survives. A vectorised shortcut would drop R3.
    user = np.array([0, 0, 0, 1])
    item = np.array([10, 11, 11, 10])
    text = np.array([7, 7, 8, 7], dtype=np.uint64)
    ts = np.array([3, 2, 1, 1])
    keep, n_item, n_text = dedup_latest_first(user, item, text, ts, np.arange(4))
    assert keep.tolist() == [True, False, True, True]
    assert (n_item, n_text) == (0, 1)


def test_dedup_keeps_newest_of_repeated_item():
    keep, n_item, _ = dedup_latest_first(
        np.array([0, 0]),
        np.array([5, 5]),
        np.array([1, 2], dtype=np.uint64),
        np.array([1, 9]),
        np.array([0, 1]),
    )
    assert keep.tolist() == [False, True] and n_item == 1


def _dedup_by_hand(user, item, text, ts, line):
    """The greedy rule spelled out: per user, newest first (file order on ties)."""
    keep = np.ones(len(user), dtype=bool)
    seen: dict = {}
    for r in sorted(range(len(user)), key=lambda r: (user[r], -ts[r], line[r])):
        items, texts = seen.setdefault(user[r], (set(), set()))
        if item[r] in items or text[r] in texts:
            keep[r] = False
        else:
            items.add(item[r])
            texts.add(text[r])
    return keep


@pytest.mark.parametrize("file_order", [True, False])
def test_dedup_matches_the_greedy_rule_on_wide_keys(file_order):
    # full-width uint64 text hashes and millisecond timestamps force the ranked pair keys;
    # rows out of file order take the three-key sort instead
    rng = np.random.default_rng(1)
    n = 3000
    user = rng.integers(0, 40, n)
    item = rng.integers(0, 60, n)
    text = rng.choice(rng.integers(0, 2**64 - 1, 80, dtype=np.uint64), n)
    ts = rng.integers(1_500_000_000_000, 1_500_000_000_000 + 50, n)
    line = np.arange(n) if file_order else rng.permutation(n)
    keep, n_item, n_text = dedup_latest_first(user, item, text, ts, line)
    want = _dedup_by_hand(user, item, text, ts, line)
    assert keep.tolist() == want.tolist()
    assert n_item + n_text == int((~want).sum()) > 0


def test_k_core_iterates_to_fixed_point():
    # item 2 has one user; removing it drops user 1 below 2 reviews, which drops item 1 to
    # one user... the cascade needs several rounds.
    user = np.array([0, 0, 1, 1, 2, 2])
    item = np.array([0, 1, 1, 2, 0, 1])
    keep, iters = k_core(user, item, np.ones(6, bool), 3, 3, 2, 2, 10)
    assert keep.tolist() == [True, True, False, False, True, True]
    assert iters >= 2


def _synthetic(tmp_path, n_users=6, n_items=5, per_user=8, same_day=False):
    rng = np.random.default_rng(0)
    reviews = []
    for u in range(n_users):
        items = rng.permutation(n_items * 3)[:per_user] % n_items
        seen = set()
        for k, it in enumerate(items):
            if it in seen:
                continue
            seen.add(it)
            ts = (1000 + (k // 2 if same_day else k)) * DAY * 1000
            reviews.append(
                {
                    "user_id": f"u{u}",
                    "parent_asin": f"i{it}",
                    "title": f"t{u}{k}",
                    "text": f"review {u} {k} " + "x" * 30,
                    "rating": 1 + k % 5,
                    "timestamp": ts,
                }
            )
    metas = [
        {
            "parent_asin": f"i{i}",
            "title": f"Item {i}",
            "description": ["d" * 150],
            "categories": ["c"],
            "rating_number": 10,
        }
        for i in range(n_items)
    ]
    metas.append({"parent_asin": "i_unused", "title": "", "description": []})
    reviews.append(
        {
            "user_id": "u0",
            "parent_asin": "i_unknown",
            "title": "t",
            "text": "y" * 40,
            "rating": 3,
            "timestamp": 5 * DAY * 1000,
        }
    )
    write_jsonl(tmp_path / "reviews.jsonl", reviews)
    write_jsonl(tmp_path / "meta.jsonl", metas)
    return reviews


def _cfg(tmp_path, **protocol):
    p = {
        "min_text_chars": 20,
        "min_item_users": 2,
        "min_user_reviews": 4,
        "n_train_targets": 1,
        "min_item_profile_users": 2,
        "min_user_profile_reviews": 1,
        "require_description": True,
        "require_rating_number": True,
        "require_categories": True,
        **protocol,
    }
    return load_config(
        None,
        [
            f"data.root={tmp_path}",
            "data.reviews=reviews.jsonl",
            "data.items=meta.jsonl",
            "data.preset=paper",
        ]
        + [f"data.protocol.{k}={v}" for k, v in p.items()],
    )


def test_prepare_synthetic_structure(tmp_path):
    _synthetic(tmp_path)
    cfg = _cfg(tmp_path)
    st = prepare(cfg.data, tmp_path / "run")
    stats = st.manifest()["stats"]
    b = Benchmark(st.dir)
    assert stats["dropped_reviews"]["item unknown to the metadata"] == 1
    # one train, one val and one test sample per user
    assert (
        stats["samples"]["train"]
        == stats["samples"]["val"]
        == stats["samples"]["test"]
        == stats["users"]
    )
    for s in b.samples("test"):
        val = next(v for v in b.samples("val") if v.user_id == s.user_id)
        assert val.target in s.profile  # the validation target is history for the test sample
    assert set(pq.read_table(st.path("items.parquet"))["item_id"].to_pylist()) <= {
        f"i{i}" for i in range(5)
    }


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_no_profile_contains_its_target_or_anything_later(tmp_path, source, request):
    if source == "real":
        root = request.getfixturevalue("real_data")  # skipped when the bundled data is absent
        cfg = load_config(None, [f"data.root={root}"])
    else:
        _synthetic(tmp_path, same_day=True)  # same-day ties must be excluded too
        cfg = _cfg(tmp_path)
    b = Benchmark(prepare(cfg.data, tmp_path / "run").dir)
    assert len(b.samples()) > 0
    for s in b.samples():
        assert s.target not in s.profile
        t = b.timestamps[s.target]
        assert all(b.timestamps[r] < t for r in s.profile)
        assert all(b.user_ids[r] == s.user_id for r in s.profile)
        assert list(s.profile) == sorted(s.profile, key=lambda r: b.timestamps[r])


def test_base_profiles_never_hold_a_target(real_data, tmp_path):
    b = Benchmark(prepare(load_config(None, [f"data.root={real_data}"]).data, tmp_path).dir)
    assert not (b.base_mask & b.target_mask).any()
    test_targets = [s.target for s in b.samples("test")]
    assert not b.profile_mask[test_targets].any()  # test targets are never anyone's history


def test_small_preset_on_bundled_data(real_data, tmp_path):
    st = prepare(load_config(None, [f"data.root={real_data}"]).data, tmp_path)
    stats = st.manifest()["stats"]
    assert 80 <= stats["users"] <= 100
    assert stats["peers_per_profile_review"]["share_with_peer"] > 0.9
    assert stats["dropped_reviews"]["empty text"] == 1


def test_paper_preset_leaves_nothing_at_this_size(real_data, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.root={real_data}",
            "data.preset=paper",
            "data.protocol.require_rating_number=false",
        ],
    )
    # issue 25, item 9: an empty benchmark stops here, naming the filter (it used to finish
    # with 0 users, and every later stage ran on n = 0)
    with pytest.raises(DataError, match=r"left 0 users and 0 test samples out of 6908 reviews"):
        prepare(cfg.data, tmp_path)
    assert not (tmp_path / "prepare" / "manifest.json").exists()


def test_an_empty_reviews_file_is_an_error(tmp_path):
    (tmp_path / "reviews.jsonl").write_text("")
    (tmp_path / "meta.jsonl").write_text("")
    with pytest.raises(DataError, match=r"reviews.jsonl: no reviews read; check data.reviews"):
        prepare(_cfg(tmp_path).data, tmp_path / "run")


def test_rerun_skips_and_threshold_change_reuses_ingest(tmp_path, monkeypatch):
    _synthetic(tmp_path)
    cfg = _cfg(tmp_path)
    st = prepare(cfg.data, tmp_path / "run")
    raw_manifest = (st.dir / "raw" / "manifest.json").read_bytes()
    first = st.path("samples.parquet").read_bytes()
    prep = importlib.import_module("peerdiff.stages.prepare")

    def boom(*a, **k):
        raise AssertionError("should not re-read")

    monkeypatch.setattr(prep, "read_reviews", boom)
    prepare(cfg.data, tmp_path / "run")  # fully skipped
    cfg2 = _cfg(tmp_path, min_text_chars=25)
    st2 = prepare(cfg2.data, tmp_path / "run")  # rebuilt from raw parquet, no re-read
    assert (st2.dir / "raw" / "manifest.json").read_bytes() == raw_manifest
    assert st2.path("samples.parquet").exists() and first


def _counting(fingerprint, hashed):
    """``source_fingerprint`` that notes each file it had to read."""

    def wrapped(path, known=None):
        out = fingerprint(path, known)
        if out is not known and out != known:
            hashed.append(path)
        return out

    return wrapped


def test_inputs_are_known_by_content_not_by_path_or_time(tmp_path, monkeypatch):
    """A re-provisioned data folder (fresh modification times) or a copy elsewhere keeps
    every key; a changed content recomputes."""
    (tmp_path / "a").mkdir()
    _synthetic(tmp_path / "a")
    st = prepare(_cfg(tmp_path / "a").data, tmp_path / "run")
    key = st.key()
    for f in ("reviews.jsonl", "meta.jsonl"):  # as a new session's copy of the data
        os.utime(tmp_path / "a" / f, ns=(1, 10**18))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    prep = importlib.import_module("peerdiff.stages.prepare")
    real_read = prep.read_reviews

    def boom(*a, **k):
        raise AssertionError("should not re-read")

    monkeypatch.setattr(prep, "read_reviews", boom)
    assert prepare(_cfg(tmp_path / "a").data, tmp_path / "run").key() == key
    assert prepare(_cfg(tmp_path / "b").data, tmp_path / "run").key() == key
    digests = []
    monkeypatch.setattr(prep, "source_fingerprint", _counting(prep.source_fingerprint, digests))
    prepare(_cfg(tmp_path / "b").data, tmp_path / "run")  # the copy's identity was recorded
    assert digests == []
    monkeypatch.setattr(prep, "read_reviews", real_read)
    with open(tmp_path / "b" / "reviews.jsonl", "a") as f:
        f.write("\n")  # same reviews, other bytes: read again
    assert prepare(_cfg(tmp_path / "b").data, tmp_path / "run").key() != key


def test_interrupted_build_leaves_no_artifacts_and_resumes_identically(tmp_path, monkeypatch):
    _synthetic(tmp_path)
    cfg = _cfg(tmp_path)
    clean = prepare(cfg.data, tmp_path / "clean")
    prep = importlib.import_module("peerdiff.stages.prepare")

    real = prep.build_benchmark

    def crash(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt  # killed after writing temp files, before the rename

    monkeypatch.setattr(prep, "build_benchmark", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg.data, tmp_path / "run")
    assert not (tmp_path / "run" / "prepare" / "samples.parquet").exists()
    assert (tmp_path / "run" / "prepare" / "manifest.json").exists() is False
    monkeypatch.setattr(prep, "build_benchmark", real)
    st = prepare(cfg.data, tmp_path / "run")
    for name in ("reviews.parquet", "items.parquet", "samples.parquet"):
        assert pq.read_table(st.path(name)).equals(pq.read_table(clean.path(name)))


def test_missing_data_file_names_the_setting(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="PEERDIFF_DATA"):
        prepare(cfg.data, tmp_path / "run")


def test_dpl_main_layout(tmp_path):
    datasets = pytest.importorskip("datasets")

    def rv(asin, ts, text):
        return {"asin": asin, "title": "T", "text": text, "rating": 4.0, "timestamp": ts * 1000}

    prof = [rv("a", 1, "one"), rv("b", 2, "two")]
    main = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"user_id": "u", "profile": prof, "data": rv("c", 3, "three")}]
            ),
            "val": datasets.Dataset.from_list(
                [
                    {
                        "user_id": "u",
                        "profile": [*prof, rv("c", 3, "three")],
                        "data": rv("d", 4, "four"),
                    }
                ]
            ),
            "test": datasets.Dataset.from_list(
                [
                    {
                        "user_id": "u",
                        "profile": [*prof, rv("c", 3, "three"), rv("d", 4, "four")],
                        "data": rv("e", 5, "five"),
                    }
                ]
            ),
        }
    )
    main.save_to_disk(str(tmp_path / "DPL-main" / "Books"))
    meta = datasets.DatasetDict(
        {
            "full": datasets.Dataset.from_list(
                [{"asin": x, "title": f"Item {x}", "description": "desc"} for x in "abcde"]
            )
        }
    )
    meta.save_to_disk(str(tmp_path / "DPL-meta" / "Books"))
    cfg = load_config(
        None,
        [
            f"data.root={tmp_path}",
            "data.source=dpl",
            "data.reviews=DPL-main",
            "data.items=DPL-meta",
            "data.category=Books",
        ],
    )
    st = prepare(cfg.data, tmp_path / "run")
    b = Benchmark(st.dir)
    assert len(b) == 5  # reviews shared across splits are stored once
    test = b.samples("test")[0]
    assert [b.texts[r] for r in test.profile] == ["one", "two", "three", "four"]
    assert b.item("e").title == "Item e"
    # the saved dataset folders are known by their files' content
    key = st.key()
    assert any(k.startswith("reviews/Books/") for k in st.manifest()["sources"])
    meta.save_to_disk(str(tmp_path / "DPL-meta" / "Books"))  # the same dataset, written again
    assert prepare(cfg.data, tmp_path / "run").key() == key
    meta.map(lambda r: {"title": r["title"] + "!"}).save_to_disk(str(tmp_path / "DPL-meta2"))
    shutil.rmtree(tmp_path / "DPL-meta" / "Books")
    shutil.move(tmp_path / "DPL-meta2", tmp_path / "DPL-meta" / "Books")
    assert prepare(cfg.data, tmp_path / "run").key() != key


def test_protocol_validation():
    with pytest.raises(ValueError, match="max_user_reviews"):
        Protocol(min_user_reviews=10, max_user_reviews=5)
    assert Source("amazon23") is Source.amazon23
