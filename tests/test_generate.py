import pytest

from peerdiff.backends.base import GenParams
from peerdiff.data.schema import Sample
from peerdiff.generate import chat_fn, read_jsonl, run_predictions


class EchoBackend:
    """Deterministic fake: replies with the user message reversed; can crash on call N."""

    name = "echo"

    def __init__(self, crash_on: int | None = None):
        self.calls = 0
        self.crash_on = crash_on
        self.seen = []

    def chat(self, conversations, params, desc=""):
        self.calls += 1
        if self.crash_on == self.calls:
            raise KeyboardInterrupt("killed")
        self.seen += [c[-1]["content"] for c in conversations]
        return ["[Review]: " + c[-1]["content"][::-1] for c in conversations]


def setup(n=10):
    samples = [Sample(f"test:u{i}", "test", f"u{i}", i, (0,)) for i in range(n)]
    convs = [[{"role": "user", "content": f"prompt {i}"}] for i in range(n)]
    return samples, convs


def test_interrupted_generation_resumes_to_the_same_file(tmp_path):
    samples, convs = setup()
    clean = tmp_path / "clean.jsonl"
    run_predictions(
        "m", samples, convs, chat_fn(EchoBackend(), convs, GenParams()), clean, "k", chunk=3
    )
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_predictions(
            "m",
            samples,
            convs,
            chat_fn(EchoBackend(crash_on=3), convs, GenParams()),
            out,
            "k",
            chunk=3,
        )
    assert len(read_jsonl(out)) == 6  # two chunks were kept
    backend = EchoBackend()
    recs = run_predictions(
        "m", samples, convs, chat_fn(backend, convs, GenParams()), out, "k", chunk=3
    )
    assert backend.seen == [f"prompt {i}" for i in range(6, 10)]  # only the rest
    assert out.read_bytes() == clean.read_bytes()
    assert recs[0]["text"] == "0 tpmorp"  # the [Review]: prefix is stripped


def test_changed_prompts_or_settings_are_regenerated(tmp_path):
    samples, convs = setup(4)
    out = tmp_path / "p.jsonl"
    run_predictions("m", samples, convs, chat_fn(EchoBackend(), convs, GenParams()), out, "k1")
    convs[1] = [{"role": "user", "content": "changed"}]
    b = EchoBackend()
    run_predictions("m", samples, convs, chat_fn(b, convs, GenParams()), out, "k1")
    assert b.seen == ["changed"]
    b = EchoBackend()
    run_predictions("m", samples, convs, chat_fn(b, convs, GenParams()), out, "k2")
    assert len(b.seen) == 4


def test_torn_last_line_is_ignored(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"sample_id": "a"}\n{"sample_id": "b", "te')
    assert [r["sample_id"] for r in read_jsonl(p)] == ["a"]
    p.write_text('{"sample_id": "a"}\n{broken\n{"sample_id": "c"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2"):
        read_jsonl(p)


def test_lines_are_reused_only_for_the_same_inputs(tmp_path):
    """``inputs`` (a soft prompt's adapter and features) is part of each line's identity:
    the same conversation with other inputs is generated again."""
    from peerdiff.generate import cached_generate

    convs = [[{"role": "user", "content": f"review {i}"}] for i in range(3)]
    calls = []

    def gen(idx):
        calls.extend(idx)
        return [f"out {i}" for i in idx]

    path = tmp_path / "p.jsonl"
    cached_generate(["a", "b", "c"], convs, gen, path, "k", inputs=["x", "y", "z"])
    cached_generate(["a", "b", "c"], convs, gen, path, "k", inputs=["x", "y", "z"])
    assert calls == [0, 1, 2]  # all reused the second time
    cached_generate(["a", "b", "c"], convs, gen, path, "k", inputs=["x", "Y", "z"])
    assert calls == [0, 1, 2, 1]


def test_row_digests_follow_the_adapter_and_each_row():
    import numpy as np

    from peerdiff.generate import row_digests

    f = {"hist": np.zeros((3, 2, 4), np.float32), "mask": np.ones((3, 2), bool)}
    a = row_digests("adapter-1", f)
    assert len(set(a)) == 1  # equal rows, equal identity
    assert row_digests("adapter-2", f)[0] != a[0]
    f["hist"][1, 0, 0] = 1e-7
    b = row_digests("adapter-1", f)
    assert b[0] == a[0] and b[1] != a[1] and b[2] == a[2]


def test_a_torn_line_then_a_resume_then_another_kill_still_resumes(tmp_path):
    """Issue 25, item 5: a kill during an append leaves a partial last line; the next resume
    must not append after it (a second kill then made every resume fail)."""
    samples, convs = setup()
    clean = tmp_path / "clean.jsonl"
    run_predictions(
        "m", samples, convs, chat_fn(EchoBackend(), convs, GenParams()), clean, "k", chunk=3
    )
    out = tmp_path / "run.jsonl"
    lines = clean.read_bytes().split(b"\n")
    out.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:20])  # killed mid-append
    with pytest.raises(KeyboardInterrupt):  # resumed, then killed again
        run_predictions(
            "m", samples, convs, chat_fn(EchoBackend(crash_on=2), convs, GenParams()), out, "k", 3
        )
    assert len(read_jsonl(out)) == 6  # no line glued to the torn one
    recs = run_predictions(
        "m", samples, convs, chat_fn(EchoBackend(), convs, GenParams()), out, "k", chunk=3
    )
    assert len(recs) == 10 and out.read_bytes() == clean.read_bytes()


def test_a_corrupted_middle_line_is_a_data_error_naming_the_line(tmp_path):
    from peerdiff.errors import DataError

    p = tmp_path / "p.jsonl"
    p.write_text('{"a": 1}\n{broken\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: malformed JSON line.*delete the file"):
        read_jsonl(p)
