"""LaMP-style data: LongLaMP product-review records in, LaMP questions/outputs out."""

import copy
import json

import numpy as np
import pytest
from helpers import synthetic_overrides

from peerdiff.config import load_config
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.lamp import INPUT, export_lamp, prepare_lamp
from peerdiff.errors import DataError
from peerdiff.stages.prepare import prepare_benchmark as prepare

PRODUCTS = [
    f"A {w} record with {v} songs and a long booklet."
    for w in ("jazz", "rock", "folk", "soul")
    for v in ("ten", "twelve", "nine")
]


def longlamp_record(u: int, split: str) -> dict:
    """One LongLaMP ``product_review_user`` record (the published fields only)."""
    profile = [
        {
            "overall": float(1 + (u + k) % 5),
            "summary": f"Summary {u}-{k}",
            "reviewText": f"User {u} says the album {k} is {'good' if (u + k) % 2 else 'bad'} and always adds wow{u}.",
            "description": PRODUCTS[(u * 3 + k) % len(PRODUCTS)],
        }
        for k in range(6)
    ]
    target_desc = PRODUCTS[(u * 5 + 7) % len(PRODUCTS)]
    return {
        "reviewerId": f"R{u:02d}",
        "input": INPUT.format(rating="4.0", description=target_desc, title=f"Target {u}"),
        "output": f"User {u} writes the target review with wow{u} again.",
        "profile": profile,
    }


@pytest.fixture
def longlamp_dir(tmp_path):
    d = tmp_path / "longlamp"
    d.mkdir()
    users = {"train": range(0, 8), "val": range(8, 10), "test": range(10, 13)}
    for split, us in users.items():
        (d / f"{split}.json").write_text(json.dumps([longlamp_record(u, split) for u in us]))
    return d


def test_longlamp_records_become_the_canonical_tables(longlamp_dir, tmp_path):
    stats = prepare_lamp(longlamp_dir, tmp_path / "out")
    assert stats["samples"] == {"train": 8, "val": 2, "test": 3} and stats["users"] == 13
    b = Benchmark(tmp_path / "out")
    s = b.sample("test:R10")
    t = b.review(s.target)
    assert t.rating == 4.0 and t.title == "Target 10" and "wow10 again" in t.text
    assert b.item(t.item_id).description == PRODUCTS[(10 * 5 + 7) % len(PRODUCTS)]
    assert [b.titles[p] for p in s.profile] == [f"Summary 10-{k}" for k in range(6)]
    assert all(b.timestamps[p] < b.timestamps[s.target] for p in s.profile)
    # the same product description is the same item: users who reviewed it are peers
    assert len({b.item_ids[p] for p in b.samples("train")[0].profile}) == 6
    assert (b.base_mask.sum() > 0) and not (b.base_mask & b.target_mask).any()


def test_bad_records_name_the_file_and_record(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    rec = longlamp_record(0, "test")
    rec["input"] = "Write something."
    (d / "test.json").write_text(json.dumps([longlamp_record(1, "test"), rec]))
    with pytest.raises(DataError, match=r"test\.json record 1: field 'input' does not follow"):
        prepare_lamp(d, tmp_path / "o")
    with pytest.raises(DataError, match="no LaMP split files"):
        prepare_lamp(tmp_path, tmp_path / "o2")


def test_export_round_trip_gives_the_same_samples(synthetic_bench, tmp_path):
    counts = export_lamp(synthetic_bench, tmp_path / "lamp")
    assert counts == {"train": 96, "val": 24, "test": 24}
    q = json.loads((tmp_path / "lamp" / "test_questions.json").read_text())[0]
    assert set(q) >= {"id", "input", "profile"} and q["input"].startswith("Generate the review")
    gold = json.loads((tmp_path / "lamp" / "test_outputs.json").read_text())
    assert gold["golds"][0]["id"] == q["id"]
    prepare_lamp(tmp_path / "lamp", tmp_path / "back")
    a, b = synthetic_bench, Benchmark(tmp_path / "back")
    assert sorted(s.sample_id for s in a.samples()) == sorted(s.sample_id for s in b.samples())
    for sa in a.samples():
        sb = b.sample(sa.sample_id)
        assert (sa.split, sa.user_id) == (sb.split, sb.user_id)
        for ra, rb in zip([*sa.profile, sa.target], [*sb.profile, sb.target]):
            x, y = a.review(ra), b.review(rb)
            assert (x.text, x.title, x.rating, x.item_id, x.timestamp) == (
                y.text,
                y.title,
                y.rating,
                y.item_id,
                y.timestamp,
            )
            assert a.item(x.item_id) == b.item(y.item_id)
        assert len(sa.profile) == len(sb.profile)


def _content(bench: Benchmark, rid: int) -> tuple:
    return (bench.user_ids[rid], bench.item_ids[rid], bench.texts[rid], int(bench.timestamps[rid]))


def _round_trip(bench: Benchmark, tmp_path) -> Benchmark:
    export_lamp(bench, tmp_path / "lamp")
    prepare_lamp(tmp_path / "lamp", tmp_path / "back")
    return Benchmark(tmp_path / "back")


def _profile_order_differs(a: Benchmark, b: Benchmark) -> list[str]:
    """Samples whose profile (by review content, in order) or target differ after a round trip."""
    return [
        s.sample_id
        for s in a.samples()
        if [_content(a, r) for r in (*s.profile, s.target)]
        != [_content(b, r) for r in (*b.sample(s.sample_id).profile, b.sample(s.sample_id).target)]
    ]


def _write_bench(d, reviews: list[tuple], samples: list[tuple]) -> Benchmark:
    """A prepared benchmark folder from ``(user, item, text, timestamp)`` reviews (ids in
    list order) and ``(sample_id, split, user, target, profile)`` samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peerdiff.data import schema

    d.mkdir()
    cols = {k: [] for k in schema.REVIEWS.names}
    for i, (u, it, text, ts) in enumerate(reviews):
        for k, v in zip(cols, (i, u, it, 4.0, f"t{i}", text, ts)):
            cols[k].append(v)
    pq.write_table(pa.Table.from_pydict(cols, schema=schema.REVIEWS), d / "reviews.parquet")
    items = sorted({r[1] for r in reviews})
    pq.write_table(
        pa.Table.from_pydict(
            {"item_id": items, "title": items, "description": [f"about {i}" for i in items]},
            schema=schema.ITEMS,
        ),
        d / "items.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [dict(zip(schema.SAMPLES.names, s)) for s in samples], schema=schema.SAMPLES
        ),
        d / "samples.parquet",
    )
    return Benchmark(d)


def test_round_trip_keeps_the_order_of_same_time_reviews(tmp_path):
    # u's reviews 2 and 3 share a time; 3 is a target first (2 left out as a tie), so the
    # importer meets 3 before 2, and 3 used to come first in the later profiles.
    u = [("u", f"i{k}", f"u on i{k}", ts) for k, ts in ((0, 1), (1, 5), (2, 5), (3, 9))]
    reviews = [("v", "i1", "v on i1", 1), *u, ("v", "i0", "v on i0", 2)]
    reviews += [("u", "i4", "u on i4", 9), ("u", "i5", "u on i5", 9)]  # 7: in no sample
    a = _write_bench(
        tmp_path / "a",
        reviews,
        [
            ("train:u:0", "train", "u", 3, [1]),
            ("val:u", "val", "u", 4, [1, 2, 3]),
            ("test:u", "test", "u", 6, [1, 2, 3]),
            ("test:v", "test", "v", 5, [0]),
        ],
    )
    b = _round_trip(a, tmp_path)
    assert _profile_order_differs(a, b) == []
    assert [_content(b, r) for r in b.sample("test:u").profile] == u[:3]
    # reviews keep their relative order (peers and sums over them come in the same order);
    # the review no sample uses has no LaMP record
    assert [_content(b, r) for r in range(len(b))] == [_content(a, r) for r in range(7)]


def test_round_trip_of_the_small_preset_is_exact(real_data, tmp_path):
    a = Benchmark(prepare(load_config(None, [f"data.root={real_data}"]).data, tmp_path).dir)
    b = _round_trip(a, tmp_path)
    assert len(a.samples()) == len(b.samples()) == 522
    assert _profile_order_differs(a, b) == []  # 62 of 522 differed (same-time ties)
    used = np.flatnonzero(a.profile_mask | a.target_mask)
    assert len(a) - len(used) == 5  # one user's reviews at the time of all its targets
    assert [_content(b, r) for r in range(len(b))] == [_content(a, r) for r in used]


def test_longlamp_runs_end_to_end_through_dep(longlamp_dir, tiny_lm, tiny_encoder_dir, tmp_path):
    from peerdiff.backends import Backends
    from peerdiff.backends.hf import HFBackend
    from peerdiff.runner import run

    model, tok, _ = tiny_lm
    cfg = load_config(
        None,
        [
            "data.source=lamp",
            f"data.root={longlamp_dir.parent}",
            f"data.reviews={longlamp_dir.name}",
            "data.items=null",
            f"run_dir={tmp_path / 'run'}",
            f"embed.model={tiny_encoder_dir}",
            f"cache_dir={tmp_path / 'cache'}",
            "llm.model=tiny",
            "methods=[nonperso,dep]",
            "generate.max_new_tokens=4",
            "train.epochs=1",
            "train.val_samples=2",
            "train.max_target_tokens=8",
            "evaluate.bertscore=false",
            "evaluate.nll_target_tokens=8",
            "probe.splits=[test]",
            "probe.donors=2",
        ],
    )
    rows = run(
        cfg, backends=Backends(cfg, local=HFBackend(model, copy.deepcopy(tok), batch_size=4))
    )
    assert [(r["method"], r["n"]) for r in rows] == [("nonperso", 3), ("dep", 3)]
    assert all(r["scores"]["nll"] is not None for r in rows)
    assert (tmp_path / "run" / "probe" / "dep-test" / "summary.json").exists()
    stats = json.loads((tmp_path / "run" / "contrast" / "manifest.json").read_text())["stats"]
    assert stats["slots_per_sample_mean"] > 0  # peers through shared product descriptions
    assert prepare(cfg.data, tmp_path / "run").key()  # the stage is keyed and reusable


def test_export_command(synthetic_root, tmp_path):
    from peerdiff.cli import main

    out = tmp_path / "exported"
    assert (
        main(["export", "--out", str(out), *synthetic_overrides(synthetic_root, tmp_path / "r")])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}_{k}.json" for s in ("train", "val", "test") for k in ("questions", "outputs")
    )
