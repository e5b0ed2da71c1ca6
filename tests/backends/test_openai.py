"""Reasoning models behind an OpenAI-compatible server, against a scripted fake server.

The fake is a real HTTP server on localhost. It answers each chat request in one of four
ways, picked from a hash of the request's last message: a normal answer, thinking cut at
the budget (``<think>...`` + ``finish_reason=length``), the thinking split off into
``reasoning_content`` with a normal answer, or only ``reasoning_content`` (no answer). A
retry (seed + 1) of a cut answer succeeds; a retry of a missing answer is still missing.
"""

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import synthetic_overrides

from peerdiff import stages
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.backends.openai import OpenAIBackend
from peerdiff.config import load_config

NORMAL, CUT, SPLIT, NO_ANSWER = range(4)
FEATURE = "--- [Pacing] Definition: speed. Difference Description: faster than others. ---"


def case_of(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % 4


class FakeServer:
    def __init__(self, answer: str = FEATURE):
        self.log: list[dict] = []
        self.answer = answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                content, reasoning, finish = server.reply(body)
                msg = {"role": "assistant", "content": content}
                if reasoning:
                    msg["reasoning_content"] = reasoning
                out = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def reply(self, body: dict) -> tuple[str | None, str, str]:
        last = body["messages"][-1]["content"]
        case, retry = case_of(last), body.get("seed", 0) % 2 == 1
        self.log.append({"body": body, "case": case, "retry": retry})
        if case == CUT and not retry:
            return "<think>The current user writes long sentences and the others", "", "length"
        if case == NO_ANSWER:
            return None, "I compared the reviews and ran out of", "stop"
        if case == SPLIT:
            return self.answer, "thinking about style", "stop"
        return f"<think>short</think>{self.answer}", "", "stop"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def fake():
    f = FakeServer()
    yield f
    f.close()


def test_backend_reads_split_reasoning_and_finish_reasons(fake):
    be = OpenAIBackend("r1", base_url=fake.url, max_retries=0)
    texts = [f"question {i}" for i in range(40)]
    outs = be.complete([[{"role": "user", "content": t}] for t in texts], GenParams())
    for t, c in zip(texts, outs):
        case = case_of(t)
        assert c.finish_reason == ("length" if case == CUT else "stop")
        assert (c.text == "") == (case == NO_ANSWER)  # content None -> "" (not an answer)
        assert bool(c.reasoning) == (case in (SPLIT, NO_ANSWER))


def test_drp_never_passes_on_failed_calls(fake, synthetic_root, tiny_encoder_dir, tmp_path):
    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, tmp_path),
            f"embed.model={tiny_encoder_dir}",
            f"cache_dir={tmp_path / 'cache'}",
            "generate.max_samples=6",
            "pipeline.n_items=2",
            "pipeline.min_peers=2",
            "pipeline.validate_max_tokens=300",
            f"backends.r1={{type: openai, model: r1, base_url: '{fake.url}', reasoning: true, "
            "reasoning_tokens: 2048, instructions: user, max_retries: 0}",
            "roles.extractor=r1",
            "roles.validator=r1",
            "roles.summarizer=r1",
        ],
    )
    data = stages.data(cfg, ["drp"])
    backends = Backends(cfg)
    items = stages.samples(cfg, data.bench, "test")
    P = stages.MethodSplit(cfg, "drp", "test", data, backends, items=items).prompts(None)
    calls = P.stats["calls"]
    for step in ("extract", "validate", "summary"):
        first = [e for e in fake.log if e["body"].get("seed") == 0 and _step(e) == step]
        failed = sum(e["case"] in (CUT, NO_ANSWER) for e in first)
        missing = sum(e["case"] == NO_ANSWER for e in first)
        assert calls[step] == {
            "calls": len(first),
            "failed": failed,
            "recovered_by_retry": failed - missing,
            "missing": missing,
        }, step
    assert calls["extract"]["missing"] > 0 and calls["extract"]["recovered_by_retry"] > 0
    # a missing extraction is never validated; reasoning-role settings reached the server
    n_ok = calls["extract"]["calls"] - calls["extract"]["missing"]
    assert calls["validate"]["calls"] == n_ok
    for e in fake.log:
        assert all(m["role"] != "system" for m in e["body"]["messages"])  # instructions: user
        assert e["body"]["max_tokens"] > 2048  # answer budget + reasoning budget
    # nothing unfinished or missing reaches the summarizer or the generator
    for e in fake.log:
        if _step(e) == "summary":
            text = e["body"]["messages"][-1]["content"]
            assert "<think>" not in text and "ran out of" not in text
    for conv in P.conversations:
        assert "<think>" not in conv[-1]["content"]


def _step(entry) -> str:
    text = entry["body"]["messages"][-1]["content"]
    if "[Extracted Differences]" in text:
        return "validate"
    if "profile summary" in text:
        return "summary"
    return "extract"


def test_judge_counts_unparseable_and_unfinished_answers_as_missing(
    synthetic_root, tiny_lm, tmp_path
):
    import copy

    from peerdiff.backends.hf import HFBackend

    fake = FakeServer(answer="7")
    try:
        cfg = load_config(
            None,
            [
                *synthetic_overrides(synthetic_root, tmp_path),
                "llm.model=tiny",
                "methods=[nonperso]",
                "generate.max_samples=12",
                "generate.max_new_tokens=4",
                "evaluate.bertscore=false",
                f"backends.judge={{type: openai, model: j, base_url: '{fake.url}', max_retries: 0}}",
                "roles.judge=judge",
            ],
        )
        model, tok, _ = tiny_lm
        backends = Backends(cfg, local=HFBackend(model, copy.deepcopy(tok), batch_size=4))
        data = stages.data(cfg)
        gen = stages.generate(cfg, "nonperso", "test", data, backends)
        st = stages.evaluate(cfg, "nonperso", "test", gen, None, data, backends)
        j = np.asarray(pq.read_table(st.path("scores.parquet"))["judge"].to_pylist(), float)
        cases = [e["case"] for e in fake.log]
        assert len(cases) == 12  # one call per sample, no retries for the judge
        missing = sum(c in (CUT, NO_ANSWER) for c in cases)  # cut mid-thought or no answer
        assert int(np.isnan(j).sum()) == missing > 0
        assert set(j[np.isfinite(j)]) == {0.7}  # "7" and "<think>short</think>7" alike
        for e in fake.log:
            assert e["body"]["max_tokens"] >= 64 and e["body"]["temperature"] == 0  # greedy
            assert e["body"]["messages"][-1]["content"].endswith("[Score]: ")
        assert any(
            f"{missing} of 12 answers had no score" in n for n in st.manifest()["summary"]["notes"]
        )
    finally:
        fake.close()


def test_a_plain_models_cut_answer_is_its_answer_a_reasoning_models_is_not():
    from peerdiff.backends.base import Completion, answer_problem

    cut = Completion("The user writes longer sentences than", finish_reason="length")
    assert answer_problem(cut, reasoning=False) is None
    assert "finish_reason=length" in answer_problem(cut, reasoning=True)
    for reasoning in (False, True):
        assert answer_problem(Completion(""), reasoning) == "no answer"
        assert "never closed" in answer_problem(Completion("<think>hm"), reasoning)
