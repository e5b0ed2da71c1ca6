import pyarrow.parquet as pq
import pytest
from helpers import write_jsonl

from peerdiff.config import Source
from peerdiff.data.formats import FORMATS
from peerdiff.data.readers import DataError, make_description, read_items, read_reviews

A23 = FORMATS[Source.amazon23]


def rec(**kw):
    base = {
        "user_id": "u1",
        "parent_asin": "i1",
        "title": "t",
        "text": "some text",
        "rating": 5.0,
        "timestamp": 1_600_000_000_000,
    }
    base.update(kw)
    return base


def read(tmp_path, records, fmt=A23, **kw):
    src = write_jsonl(tmp_path / "r.jsonl", records)
    out = tmp_path / "raw.parquet"
    stats = read_reviews(src, fmt, out, **kw)
    return stats, pq.read_table(out).to_pylist()


def test_amazon23_fields_and_millisecond_timestamps(tmp_path):
    stats, rows = read(tmp_path, [rec(text="  a   b \n c ")])
    assert stats.rows == 1
    r = rows[0]
    assert (r["user_id"], r["item_id"], r["rating"], r["timestamp"]) == (
        "u1",
        "i1",
        5.0,
        1_600_000_000,
    )
    assert r["text"] == "a b c" and r["text_len"] == 5 and r["line"] == 1


def test_gzip_and_blank_lines_keep_true_line_numbers(tmp_path):
    from peerdiff.data.readers import read_reviews_lines

    src = write_jsonl(tmp_path / "r.jsonl.gz", [rec(), "", rec(user_id="u2")], gz=True)
    read_reviews_lines(src, A23, tmp_path / "o.parquet")
    assert [r["line"] for r in pq.read_table(tmp_path / "o.parquet").to_pylist()] == [1, 3]
    # the columnar reader skips the blank line too; it counts records (order is what matters)
    read_reviews(src, A23, tmp_path / "c.parquet")
    rows = pq.read_table(tmp_path / "c.parquet").to_pylist()
    assert [r["user_id"] for r in rows] == ["u1", "u2"] and [r["line"] for r in rows] == [1, 2]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"user_id": "u1", broken', "malformed JSON"),
        ('["not", "an", "object"]', "expected a JSON object"),
        (rec(user_id=None), "missing required field 'user_id'"),
        (rec(parent_asin=""), "missing required field 'parent_asin'"),
        (rec(rating="five"), "field 'rating' is not a number: 'five'"),
        (rec(rating="nan"), "field 'rating' is not a number: 'nan'"),
        (rec(timestamp=None), "missing required field 'timestamp'"),
        # issue 25, item 11: values that used to be accepted
        (rec(rating=-999), "field 'rating' = -999 is outside [0, 10]"),
        (rec(rating=1e308), "field 'rating' = 1e+308 is outside [0, 10]"),
        (rec(timestamp=-5), "field 'timestamp' = -5 is not a time between 1970 and 3000"),
        (rec(timestamp=10**30), "field 'timestamp' = 1e+30 is not a time between 1970"),
        (rec(user_id={"a": 1}), "field 'user_id' must be a string or an integer id, got dict"),
        (rec(parent_asin=[1]), "field 'parent_asin' must be a string or an integer id"),
        (rec(text=123), "field 'text' must be a string, got int 123"),
        (rec(title={"x": 1}), "field 'title' must be a string, got dict"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    with pytest.raises(DataError) as e:
        read(tmp_path, [rec(), line])
    assert f"r.jsonl:2: {message}" in str(e.value)


def test_integer_ids_are_kept_as_strings(tmp_path):
    _, rows = read(tmp_path, [rec(user_id=17, parent_asin=4)])
    assert (rows[0]["user_id"], rows[0]["item_id"]) == ("17", "4")


def test_skip_mode_counts_out_of_range_values_too(tmp_path):
    stats, rows = read(
        tmp_path, [rec(), rec(rating=-999), rec(timestamp=10**30)], on_bad_line="skip"
    )
    assert len(rows) == 1
    assert stats.skipped == {"out-of-range 'rating'": 1, "out-of-range 'timestamp'": 1}


def test_skip_mode_counts_bad_lines(tmp_path):
    stats, rows = read(
        tmp_path, [rec(), "{oops", rec(rating="x"), rec(rating="4")], on_bad_line="skip"
    )
    assert len(rows) == 2 and rows[1]["rating"] == 4.0  # numeric strings are numbers
    assert stats.skipped == {"malformed JSON": 1, "non-numeric 'rating'": 1}
    assert any("r.jsonl:2" in e for e in stats.examples)


def test_empty_text_and_title_are_kept_for_the_protocol_to_count(tmp_path):
    _, rows = read(tmp_path, [rec(text=None, title="")])
    assert rows[0]["text_len"] == 0 and rows[0]["title_len"] == 0


@pytest.mark.parametrize("source", [Source.amazon2014, Source.amazon2018])
def test_mcauley_formats(tmp_path, source):
    r = {
        "reviewerID": "A1",
        "asin": "B1",
        "summary": "Nice",
        "reviewText": "Good album",
        "overall": 4.0,
        "unixReviewTime": 1_158_019_200,
        "helpful": [3, 3],
    }
    _, rows = read(tmp_path, [r], fmt=FORMATS[source])
    assert rows[0]["user_id"] == "A1" and rows[0]["timestamp"] == 1_158_019_200
    assert rows[0]["title"] == "Nice"


def test_generic_format(tmp_path):
    r = {"user_id": "x", "item_id": "y", "title": "T", "text": "body", "rating": 3, "timestamp": 10}
    _, rows = read(tmp_path, [r], fmt=FORMATS[Source.generic])
    assert rows[0]["item_id"] == "y" and rows[0]["timestamp"] == 10


def test_items_descriptions_and_duplicates(tmp_path):
    metas = [
        {
            "parent_asin": "i1",
            "title": "A",
            "description": ["Product Description", "Long text"],
            "categories": ["Music"],
            "rating_number": 3,
        },
        {"parent_asin": "i1", "title": "dup", "description": []},
        {
            "parent_asin": "i2",
            "title": "B",
            "description": [],
            "categories": [],
            "rating_number": None,
        },
    ]
    src = write_jsonl(tmp_path / "m.jsonl", metas)
    stats = read_items(src, A23, tmp_path / "m.parquet")
    rows = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert stats.duplicates == 1 and [r["item_id"] for r in rows] == ["i1", "i2"]
    assert rows[0]["description"] == "Long text" and rows[0]["has_rating_number"]
    assert not rows[1]["has_categories"] and not rows[1]["has_rating_number"]


def test_make_description_variants():
    assert make_description(None) == ""
    assert make_description(" plain ") == "plain"
    assert make_description(["Product Description"]) == ""
    assert make_description(["a", "b"]) == "a b"


def _raw(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


@pytest.mark.parametrize("normalize", [True, False])
def test_columnar_and_line_readers_write_the_same_table(tmp_path, normalize):
    from helpers import write_jsonl

    from peerdiff.data.columnar import read_reviews_columnar
    from peerdiff.data.readers import read_reviews_lines

    texts = [
        "plain text",
        "  tabs\tand\nnewlines  ",
        "nbsp\u00a0here and\u2028line sep\u3000wide",
        "vertical\x0btab and \x85 next line \x1f unit sep",
        "",
        "emoji 🎵  music",
    ]
    recs = [
        {
            "user_id": f"u{i}",
            "parent_asin": f"i{i % 3}",
            "title": f" T{i}\t ",
            "text": t,
            "rating": 1 + i % 5,
            "timestamp": 1_600_000_000_123 + i,
        }
        for i, t in enumerate(texts)
    ]
    recs.append(
        {
            "user_id": "u9",
            "asin": "i7",
            "text": "no parent_asin, no title",
            "rating": 4.5,
            "timestamp": 5,
        }
    )
    f = write_jsonl(tmp_path / "r.jsonl.gz", recs, gz=True)
    fmt = FORMATS[Source.amazon23]
    a = read_reviews_columnar(f, fmt, tmp_path / "a.parquet", normalize)
    assert a is not None and a.rows == len(recs)
    read_reviews_lines(f, fmt, tmp_path / "b.parquet", "error", normalize)
    assert _raw(tmp_path / "a.parquet") == _raw(tmp_path / "b.parquet")


def test_columnar_reader_falls_back_so_errors_name_the_line(tmp_path):
    from helpers import write_jsonl

    from peerdiff.data.columnar import read_reviews_columnar

    good = {
        "user_id": "u",
        "parent_asin": "i",
        "text": "x",
        "title": "t",
        "rating": 5,
        "timestamp": 1,
    }
    f = write_jsonl(tmp_path / "r.jsonl", [good, {**good, "rating": "five"}, good])
    fmt = FORMATS[Source.amazon23]
    assert read_reviews_columnar(f, fmt, tmp_path / "c.parquet") is None  # needs the line reader
    with pytest.raises(DataError, match=r"r\.jsonl:2: field 'rating' is not a number: 'five'"):
        read_reviews(f, fmt, tmp_path / "d.parquet")
    # numeric strings are accepted (by the line reader) as before
    f2 = write_jsonl(tmp_path / "s.jsonl", [good, {**good, "rating": "4.0"}])
    assert read_reviews(f2, fmt, tmp_path / "e.parquet").rows == 2


def test_both_readers_agree_on_the_bundled_file(real_data, tmp_path):
    from peerdiff.data.columnar import read_reviews_columnar
    from peerdiff.data.readers import read_reviews_lines

    f = real_data / "amazon-2023-schema-digital-music" / "Digital_Music.jsonl.gz"
    fmt = FORMATS[Source.amazon23]
    assert read_reviews_columnar(f, fmt, tmp_path / "a.parquet") is not None
    read_reviews_lines(f, fmt, tmp_path / "b.parquet")
    assert _raw(tmp_path / "a.parquet") == _raw(tmp_path / "b.parquet")


def test_a_truncated_gzip_names_the_file_and_line(tmp_path):
    """Both readers: a cut download is a DataError naming the file, never a bare EOFError."""
    good = [rec(user_id=f"u{i}", text=f"review number {i} " * 20) for i in range(3000)]
    f = write_jsonl(tmp_path / "r.jsonl.gz", good, gz=True)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"r\.jsonl\.gz:\d+: the gzip stream is damaged"):
        read_reviews(f, A23, tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()
