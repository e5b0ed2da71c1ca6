"""LaMP-style records (LongLaMP's product review task first) in and out.

**In** (``data.source: lamp``): ``data.reviews`` is a folder with one file per split --
``train``/``val`` (or ``dev``)/``test`` as ``.json`` (an array), ``.jsonl``, or LaMP's
``<split>_questions.json`` + ``<split>_outputs.json`` pair -- or a ``datasets``
``save_to_disk`` folder with those splits. Each record is one sample::

    {"reviewerId": "A1..", "input": "Generate the review text written by a reviewer who has
     given an overall rating of \"5.0\" for a product with description \"...\". The summary
     of the review text is \"...\".", "output": "<the review>",
     "profile": [{"overall": 4.0, "summary": "...", "reviewText": "...", "description": "..."}]}

The target's rating, description and review title come from the input sentence (LongLaMP's
template), or from the record's ``rating``/``title``/``description`` keys when present.
LongLaMP has no item ids or times: an item is identified by its description (so users who
reviewed the same product are peers) and a profile is in time order, the target last. Keys
``asin`` and ``unixReviewTime`` (profile) and ``asin``/``timestamp`` (record) are used when
present. A profile is sorted by time *stably*: reviews at the same time keep the file's
order, the tie-break both sides agree on (:func:`export_lamp` writes each profile in the
benchmark's order: time, then review id). When every review carries a ``review_id`` (the
export writes it), reviews are numbered in that order, so peers and sums over them come in
the same order too. An export therefore reads back to the same samples, profiles (in order)
and reviews; only reviews that no sample uses (in no profile and no target, e.g. a review
at the same time as all of its user's targets) are not written: a LaMP file has no record
for them, and no feature or method uses them (never embedded, never peers).

**Out** (``peerdiff export --format lamp``): per split ``<split>_questions.json`` (id, input,
profile) and ``<split>_outputs.json`` (``{"task", "golds": [{"id", "output"}]}``), the
layout LaMP toolkits read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from peerdiff.data import schema
from peerdiff.data.build import SAMPLE_SPLITS
from peerdiff.errors import DataError

INPUT = (
    'Generate the review text written by a reviewer who has given an overall rating of "{rating}" '
    'for a product with description "{description}". The summary of the review text is '
    '"{title}".'
)
_INPUT = re.compile(
    r'overall rating of "?(?P<rating>[0-9.]+)"? for a product with description "(?P<description>.*)"\. '
    r'The summary of the review text is "(?P<title>.*)"\.?\s*$',
    re.S,
)
SPLIT_NAMES = {"train": ("train",), "val": ("val", "dev", "validation"), "test": ("test",)}
TASK = "peerdiff-review-writing"
# bump when prepare_lamp's tables change for the same files (v2: stable profile order)
FORMAT = "lamp-v2"


def _item_id(r: dict[str, Any]) -> str:
    if r.get("asin"):
        return str(r["asin"])
    desc = str(r.get("description") or "")
    return "desc:" + hashlib.sha1(desc.encode()).hexdigest()[:12]


def _records(root: Path, split: str) -> Iterator[tuple[str, int, dict]]:
    """``(file, index, record)`` of one split (outputs merged in by id)."""
    for name in SPLIT_NAMES[split]:
        for f in (root / f"{name}.json", root / f"{name}.jsonl", root / f"{name}_questions.json"):
            if not f.exists():
                continue
            if f.suffix == ".jsonl":
                recs = [orjson.loads(line) for line in f.read_bytes().splitlines() if line.strip()]
            else:
                try:
                    recs = orjson.loads(f.read_bytes())
                except orjson.JSONDecodeError as e:
                    raise DataError(f"{f}: malformed JSON ({e})", "malformed JSON") from None
            outputs = f.with_name(f.name.replace("_questions", "_outputs"))
            if f.name.endswith("_questions.json") and outputs.exists():
                golds = {
                    str(g["id"]): g["output"] for g in orjson.loads(outputs.read_bytes())["golds"]
                }
                for r in recs:
                    r.setdefault("output", golds.get(str(r.get("id"))))
            for i, r in enumerate(recs):
                yield str(f), i, r
            return
    if (root / "dataset_dict.json").exists():  # datasets.save_to_disk folder
        import datasets

        dd = datasets.load_from_disk(str(root))
        for name in SPLIT_NAMES[split]:
            if name in dd:
                for i, r in enumerate(dd[name]):
                    yield f"{root}[{name}]", i, dict(r)
                return


def _target(where: str, rec: dict) -> dict[str, Any]:
    """The target review's fields: from explicit keys, else parsed from the input sentence."""
    out = rec.get("output")
    if not isinstance(out, str) or not out.strip():
        raise DataError(f"{where}: missing field 'output' (the target review)", "missing output")
    if all(k in rec for k in ("rating", "title", "description")):
        fields = {k: rec[k] for k in ("rating", "title", "description")}
    else:
        m = _INPUT.search(str(rec.get("input", "")))
        if m is None:
            raise DataError(
                f"{where}: field 'input' does not follow LongLaMP's review template "
                "(rating, description, summary); give 'rating', 'title' and 'description' keys",
                "unparsed input",
            )
        fields = m.groupdict()
    return {
        "rating": float(fields["rating"]),
        "title": str(fields["title"]),
        "description": str(fields["description"]),
        "reviewText": out,
        "asin": rec.get("asin"),
        "item_title": rec.get("item_title"),
        "unixReviewTime": rec.get("timestamp"),
        "review_id": rec.get("review_id"),
    }


def prepare_lamp(root: Path, out_dir: Path, max_users: int | None = None) -> dict[str, Any]:
    """Convert LaMP-style split files into ``reviews``/``items``/``samples`` Parquet tables."""
    if not root.exists():
        raise DataError(f"LaMP records folder not found: {root} (data.reviews)")
    index: dict[tuple, int] = {}
    rows: dict[str, list] = {k: [] for k in schema.REVIEWS.names}
    items: dict[str, tuple[str, str]] = {}  # item -> (title, description)
    samples: dict[str, list] = {k: [] for k in schema.SAMPLES.names}
    seen_ids: set[str] = set()
    users_kept: list[str] = []
    source_ids: list[int | None] = []  # each review's ``review_id`` in the file, if any

    def rid(user: str, r: dict, ts: int, where: str) -> int:
        text = r.get("reviewText", r.get("text"))
        if not isinstance(text, str):
            raise DataError(f"{where}: missing field 'reviewText'", "missing field 'reviewText'")
        item = _item_id(r)
        items.setdefault(item, (str(r.get("item_title") or ""), str(r.get("description") or "")))
        k = (user, item, text)
        if k not in index:
            index[k] = len(index)
            rows["review_id"].append(index[k])
            rows["user_id"].append(user)
            rows["item_id"].append(item)
            rows["rating"].append(float(r.get("overall", r.get("rating", 0.0)) or 0.0))
            rows["title"].append(str(r.get("summary", r.get("title", "")) or ""))
            rows["text"].append(text)
            rows["timestamp"].append(
                int(r["unixReviewTime"]) if r.get("unixReviewTime") is not None else ts
            )
            source_ids.append(int(r["review_id"]) if r.get("review_id") is not None else None)
        return index[k]

    found = False
    for split in SAMPLE_SPLITS:
        for f, i, rec in _records(root, split):
            found = True
            where = f"{f} record {i}"
            user = str(rec.get("reviewerId") or rec.get("user_id") or rec.get("id") or "")
            if not user:
                raise DataError(
                    f"{where}: missing field 'reviewerId'", "missing field 'reviewerId'"
                )
            if max_users is not None and user not in users_kept:
                if len(users_kept) >= max_users:
                    continue
                users_kept.append(user)
            prof = rec.get("profile") or []
            profile = [rid(user, p, t, f"{where} profile[{t}]") for t, p in enumerate(prof)]
            target = rid(user, _target(where, rec), len(prof), where)
            t_ts = rows["timestamp"][target]
            # stable: same-time reviews keep the file's order (dict: first occurrence kept)
            profile = sorted(
                dict.fromkeys(p for p in profile if rows["timestamp"][p] < t_ts),
                key=lambda p: rows["timestamp"][p],
            )
            if not profile:
                continue
            sid = str(rec["id"]) if rec.get("id") is not None else f"{split}:{user}"
            while sid in seen_ids:
                sid += "+"
            seen_ids.add(sid)
            samples["sample_id"].append(sid)
            samples["split"].append(split)
            samples["user_id"].append(user)
            samples["target"].append(target)
            samples["profile"].append(profile)
    if not found:
        raise DataError(
            f"no LaMP split files in {root}: expected train/val/test as .json, .jsonl, "
            "<split>_questions.json (+ _outputs.json), or a datasets folder"
        )
    _renumber(rows, samples, source_ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(rows, schema=schema.REVIEWS), out_dir / "reviews.parquet")
    ids = sorted(items)
    pq.write_table(
        pa.Table.from_pydict(
            {
                "item_id": ids,
                "title": [items[i][0] for i in ids],
                "description": [items[i][1] for i in ids],
            },
            schema=schema.ITEMS,
        ),
        out_dir / "items.parquet",
    )
    pq.write_table(
        pa.Table.from_pydict(samples, schema=schema.SAMPLES), out_dir / "samples.parquet"
    )
    return {
        "input_rows": len(rows["review_id"]),
        "users": len(set(samples["user_id"])),
        "items": len(ids),
        "reviews": len(rows["review_id"]),
        "samples": {s: samples["split"].count(s) for s in SAMPLE_SPLITS},
    }


def _renumber(rows: dict[str, list], samples: dict[str, list], source: list[int | None]) -> None:
    """Number the reviews in the order of the file's ``review_id`` when every review has a
    distinct one (an export); otherwise keep the order in which they were first read."""
    if not source or None in source or len(set(source)) != len(source):
        return
    order = sorted(range(len(source)), key=source.__getitem__)
    if order == list(range(len(order))):
        return
    new = [0] * len(order)
    for i, old in enumerate(order):
        new[old] = i
    for k in rows:
        rows[k] = [rows[k][old] for old in order]
    rows["review_id"] = list(range(len(order)))
    samples["target"] = [new[t] for t in samples["target"]]
    samples["profile"] = [[new[p] for p in prof] for prof in samples["profile"]]


def export_lamp(bench, out_dir: str | Path) -> dict[str, int]:
    """Write a prepared benchmark as LaMP-style ``<split>_questions.json`` /
    ``<split>_outputs.json``: profiles in the benchmark's order, every review with its
    ``review_id`` (see the module docstring for what reads back). Returns the number of
    samples per split."""
    from peerdiff.stage import atomic_path

    out_dir = Path(out_dir)
    counts = {}
    for split in SAMPLE_SPLITS:
        qs, golds = [], []
        for s in bench.samples(split):
            t = bench.review(s.target)
            item = bench.item(t.item_id)
            qs.append(
                {
                    "id": s.sample_id,
                    "reviewerId": s.user_id,
                    "input": INPUT.format(
                        rating=f"{t.rating:.1f}", description=item.description, title=t.title
                    ),
                    "rating": t.rating,
                    "title": t.title,
                    "description": item.description,
                    "item_title": item.title,
                    "asin": t.item_id,
                    "timestamp": t.timestamp,
                    "review_id": t.review_id,
                    "profile": [
                        {
                            "reviewText": r.text,
                            "summary": r.title,
                            "overall": r.rating,
                            "description": bench.item(r.item_id).description,
                            "item_title": bench.item(r.item_id).title,
                            "asin": r.item_id,
                            "unixReviewTime": r.timestamp,
                            "review_id": r.review_id,
                        }
                        for r in (bench.review(p) for p in s.profile)
                    ],
                }
            )
            golds.append({"id": s.sample_id, "output": t.text})
        for name, obj in (
            (f"{split}_questions.json", qs),
            (f"{split}_outputs.json", {"task": TASK, "golds": golds}),
        ):
            with atomic_path(out_dir / name) as tmp:
                tmp.write_bytes(orjson.dumps(obj))
        counts[split] = len(qs)
    return counts
