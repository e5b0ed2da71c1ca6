"""The HTTP service on loopback with a tiny model, and the OpenAI backend against it."""

import socket
import threading
import time

import httpx
import pytest
from helpers import synthetic_overrides

from peerdiff import stages
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.backends.hf import HFBackend
from peerdiff.backends.openai import OpenAIBackend
from peerdiff.config import load_config
from peerdiff.errors import BackendError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_backends(cfg, tiny_lm) -> Backends:
    import copy

    model, tok, _ = tiny_lm  # own tokenizer copy: the service adds placeholders to it
    return Backends(cfg, local=HFBackend(model, copy.deepcopy(tok), batch_size=8, name="hf:tiny"))


@pytest.fixture(scope="module")
def server(tiny_lm, synthetic_root, tmp_path_factory):
    import uvicorn

    from peerdiff.serve import Service, create_app

    run = tmp_path_factory.mktemp("serve")
    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, run),
            "llm.model=tiny",
            "generate.max_new_tokens=8",
            f"embed.model={_tiny_encoder(tmp_path_factory)}",
            f"cache_dir={run / 'cache'}",
        ],
    )
    service = Service(cfg, tiny_backends(cfg, tiny_lm), max_batch=8, max_wait=0.05)
    app = create_app(service)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "app": app, "service": service, "lm": tiny_lm}
    srv.should_exit = True
    t.join(timeout=10)


def test_openai_backend_against_the_server(server):
    be = OpenAIBackend("tiny", base_url=server["url"] + "/v1", concurrency=8, max_retries=0)
    convs = [[{"role": "user", "content": f"question {i}"}] for i in range(20)]
    p = GenParams(max_new_tokens=6)
    out = be.chat(convs, p)
    assert len(out) == 20 and all(isinstance(x, str) for x in out)
    # greedy over HTTP equals the in-process backend on the same conversation
    model, tok, _ = server["lm"]
    local = HFBackend(model, tok, batch_size=8).chat(convs[:3], p)
    assert out[:3] == local
    assert max(server["app"].state.worker.batches) > 1  # concurrent requests were batched


def test_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    be = OpenAIBackend("m", base_url=url, max_retries=0, timeout=2)
    with pytest.raises(BackendError, match=f"cannot reach the OpenAI-compatible server at {url}"):
        be.chat([[{"role": "user", "content": "hi"}]], GenParams(max_new_tokens=2))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 422),
        ({"model": "tiny"}, 422),
        ({"model": "tiny", "messages": []}, 422),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 422),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
            422,
        ),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2}, 400),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}, 422),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "stream_options": {"include_usage": True},
            },
            400,
        ),
        ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 422),
    ],
)
def test_chat_rejects_malformed_requests(server, body, status):
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, str)
        else {"json": body}
    )
    r = httpx.post(server["url"] + "/v1/chat/completions", timeout=30, **kw)
    assert r.status_code == status, r.text
    assert "detail" in r.json()


def test_chat_completion_shape(server):
    r = httpx.post(
        server["url"] + "/v1/chat/completions",
        timeout=30,
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 4,
            "temperature": 0,
            "frequency_penalty": 0,  # OpenAI fields at their no-op value are taken
            "user": "someone",  # and those that cannot change the answer ignored
        },
    )
    assert r.status_code == 200
    j = r.json()
    assert j["object"] == "chat.completion" and j["choices"][0]["message"]["role"] == "assistant"
    assert j["usage"]["completion_tokens"] <= 4 + 1


def review(server, **kw):
    body = {
        "item": {"title": "Kind of Blue", "description": "A jazz album."},
        "rating": 5,
        "review_title": "Timeless",
        "max_new_tokens": 6,
        **kw,
    }
    return httpx.post(server["url"] + "/v1/reviews", json=body, timeout=60)


def test_reviews_for_known_and_inline_users(server):
    user = server["service"].bench.users[0]
    for method in ("nonperso", "rag", "pag", "dpl"):
        r = review(server, user_id=user, method=method)
        assert r.status_code == 200, r.text
        assert r.json()["method"] == method and isinstance(r.json()["review"], str)
    hist = [{"item_title": "Blue Train", "rating": 4, "title": "Great", "text": "Loved the horns."}]
    assert review(server, history=hist, method="rag").status_code == 200


@pytest.mark.parametrize(
    ("kw", "status", "needle"),
    [
        ({"user_id": "nobody"}, 404, "unknown user"),
        ({}, 422, "exactly one of user_id"),
        (
            {"user_id": "x", "history": [{"item_title": "a", "rating": 1, "text": "b"}]},
            422,
            "exactly one",
        ),
        (
            {"history": [{"item_title": "a", "rating": 1, "text": "b"}], "method": "dep"},
            400,
            "known user_id",
        ),
        ({"user_id": "u", "rating": 9}, 422, "rating"),
        ({"user_id": "u", "method": "gpt"}, 422, "not one of"),
        ({"user_id": "u", "item": {"title": ""}}, 422, "title"),
        ({"user_id": "u", "max_new_tokens": 0}, 422, "max_new_tokens"),
    ],
)
def test_reviews_reject_bad_input(server, kw, status, needle):
    r = review(server, **kw)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_dep_without_adapters_is_409(server):
    user = server["service"].bench.users[0]
    r = review(server, user_id=user, method="dep")
    assert r.status_code == 409 and "peerdiff train --method dep" in r.json()["detail"]
    assert httpx.get(server["url"] + "/health").json()["status"] == "ok"  # still serving


def test_evaluate_with_a_judge_over_http(server, tiny_lm, synthetic_root, tmp_path):
    import pyarrow.parquet as pq

    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, tmp_path),
            "llm.model=tiny",
            "methods=[nonperso]",
            "generate.max_samples=3",
            "generate.max_new_tokens=4",
            "evaluate.bertscore=false",
            f"backends.judge={{type: openai, model: tiny, base_url: '{server['url']}/v1'}}",
            "roles.judge=judge",
        ],
    )
    backends = tiny_backends(cfg, tiny_lm)
    data = stages.data(cfg)
    gen = stages.generate(cfg, "nonperso", "test", data, backends)
    nll = stages.likelihood(cfg, "nonperso", "test", data, backends)
    st = stages.evaluate(cfg, "nonperso", "test", gen, nll, data, backends)
    assert "judge" in pq.read_table(st.path("scores.parquet")).column_names
    assert len((st.dir / "judge.jsonl").read_text().splitlines()) == 3
    assert any(n.startswith("judge: openai:tiny") for n in st.manifest()["summary"]["notes"])


def test_worker_groups_requests_by_settings():
    """Chats with other settings queued in between do not split a batch; each request
    gets its own answer."""
    from peerdiff.serve import GenerationWorker

    class Echo:
        def __init__(self):
            self.calls = []

        def chat(self, convs, params, desc=""):
            time.sleep(0.05)
            self.calls.append((len(convs), params.max_new_tokens))
            return [f"{c[-1]['content']}/{params.max_new_tokens}" for c in convs]

    echo = Echo()
    worker = GenerationWorker(echo, max_batch=4, max_wait=0.2)
    a, b = GenParams(max_new_tokens=8), GenParams(max_new_tokens=16)
    futures = [
        worker.submit_chat([{"role": "user", "content": str(i)}], a if i % 2 else b)
        for i in range(10)
    ]
    answers = [f.result(timeout=10).text for f in futures]
    worker.close()
    assert answers == [f"{i}/{8 if i % 2 else 16}" for i in range(10)]
    assert sorted(echo.calls) == [(1, 8), (1, 16), (4, 8), (4, 16)]


def test_worker_batches_mixed_settings_and_chats_queued_by_calls(tiny_lm):
    """On the local model, greedy chats with other budgets and penalties share one batch,
    and a chat queued by a call (how a review's prompt reaches the model) joins the round
    of that call instead of waiting for the next one. Answers equal unbatched ones."""
    from peerdiff.backends.hf import HFBackend
    from peerdiff.serve import ChatJob, GenerationWorker

    model, tok, _ = tiny_lm
    be = HFBackend(model, tok, batch_size=8)
    worker = GenerationWorker(be, max_batch=8, max_wait=0.3)
    settings = [GenParams(max_new_tokens=4 + i, repetition_penalty=1.0 + 0.2 * i) for i in range(4)]
    convs = [[{"role": "user", "content": f"prompt number {i}"}] for i in range(5)]
    from concurrent.futures import Future

    queued: Future = Future()
    futures = [worker.submit_chat(c, p) for c, p in zip(convs, settings)]
    worker.submit_call(lambda: worker.queue.put(ChatJob(convs[4], settings[0], queued)))
    answers = [f.result(timeout=60).text for f in [*futures, queued]]
    worker.close()
    assert worker.batches == [5]
    alone = [be.chat([c], p)[0] for c, p in zip(convs, [*settings, settings[0]])]
    assert answers == alone


def test_32_mixed_requests_from_8_threads_are_all_answered(server):
    """Chats and reviews (token, multi-call and inline) at once: every answer is a 200."""
    from concurrent.futures import ThreadPoolExecutor

    user = server["service"].bench.users[1]
    hist = [{"item_title": "Blue Train", "rating": 4, "title": "Great", "text": "Loved it."}]

    def one(i: int) -> int:
        if i % 4 == 0:
            r = httpx.post(
                server["url"] + "/v1/chat/completions",
                json={
                    "model": "tiny",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                    "max_tokens": 4 + i % 3,
                },
                timeout=120,
            )
        elif i % 4 == 1:
            r = review(server, user_id=user, method="rag")
        elif i % 4 == 2:
            r = review(server, history=hist, method=("nonperso", "pag")[i % 8 == 2])
        else:
            r = review(server, user_id=user, method="dpl")
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(32)))
    assert codes == [200] * 32
    assert httpx.get(server["url"] + "/health").json()["status"] == "ok"


def _tiny_encoder(factory):
    """A 2-layer random BERT folder (DPL and DEP need review vectors)."""
    from helpers import make_tiny_encoder

    return make_tiny_encoder(factory.mktemp("serve_encoder"))


def test_api_key_guards_every_route_but_health(tiny_lm, synthetic_root, tmp_path):
    from fastapi.testclient import TestClient

    from peerdiff.serve import Service, create_app

    cfg = load_config(
        None,
        [*synthetic_overrides(synthetic_root, tmp_path), "llm.model=tiny", "methods=[nonperso]"],
    )
    service = Service(cfg, tiny_backends(cfg, tiny_lm))
    with TestClient(create_app(service, api_key="s3cret", max_body_bytes=2000)) as c:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 401
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer wrong"}
        assert c.post("/v1/chat/completions", json=body, headers=bad).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/chat/completions", json=body, headers=ok).status_code == 200
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "bearer s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Basic s3cret"}).status_code == 401
        big = {**body, "messages": [{"role": "user", "content": "x" * 5000}]}
        assert c.post("/v1/chat/completions", json=big, headers=ok).status_code == 413


def test_non_local_bind_without_a_key_warns():
    from peerdiff.serve import bind_warning

    assert bind_warning("127.0.0.1", None) is None
    assert bind_warning("0.0.0.0", "k") is None
    assert "without an API key" in bind_warning("0.0.0.0", None)


def _chat(content: str, **kw) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **kw}


def test_a_prompt_beyond_the_context_is_refused_before_the_worker(server):
    """Issue 25, item 3: a chat longer than the model's context blocked every other request;
    now 400 before it reaches the worker (the tiny model's context: 4,096 tokens)."""
    msgs = [{"role": "user", "content": "x" * 30_000}] * 2  # ~60k characters, past 4,096
    r = httpx.post(
        server["url"] + "/v1/chat/completions", json={"model": "tiny", "messages": msgs}, timeout=30
    )
    assert r.status_code == 400 and "tokens; this service takes at most 4096" in r.text


def test_chunked_bodies_count_against_the_limit_and_errors_do_not_echo_input(server):
    """Issue 25, item 4: a chunked body bypassed the 1 MB limit and the 422 echoed it."""
    big = b'{"model": "tiny", "messages": "' + b"y" * 1_500_000 + b'"}'

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = httpx.post(
        server["url"] + "/v1/chat/completions",
        content=chunks(),  # no Content-Length: Transfer-Encoding: chunked
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413
    body = b'{"model": "tiny", "messages": "' + b"z" * 200_000 + b'"}'
    r = httpx.post(
        server["url"] + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_chat("hi", seed=2**70), "seed"),
        (_chat("\ud800"), "content"),
    ],
)
def test_out_of_range_values_are_422_not_500(server, body, field):
    """Issue 25, item 7: these were 500s followed by a reset connection."""
    import json

    raw = json.dumps(body)  # keeps "\\ud800" as an escape, as a client would send it
    r = httpx.post(
        server["url"] + "/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 422 and field in r.text, r.text


def test_a_history_timestamp_beyond_the_year_3000_is_422(server):
    hist = [{"item_title": "a", "rating": 4, "text": "b", "timestamp": 10**30}]
    r = review(server, history=hist, method="rag")
    assert r.status_code == 422 and "timestamp" in r.text


def test_library_errors_are_answered_by_the_status_table(server):
    """The service raises the library's errors; the app's one table turns them into status
    codes, with the message as the only field of the body."""
    from peerdiff.errors import (
        BadRequestError,
        MissingStageError,
        UnknownModelError,
        UnknownUserError,
    )
    from peerdiff.serve import ERROR_STATUS

    assert {
        BadRequestError: 400,
        UnknownModelError: 404,
        UnknownUserError: 404,
        MissingStageError: 409,
    } == ERROR_STATUS
    hist = [{"item_title": "a", "rating": 1, "text": "b"}]
    user = server["service"].bench.users[0]
    for kw, status, start in [
        ({"user_id": "nobody"}, 404, "unknown user 'nobody': not in the prepared benchmark"),
        ({"history": hist, "method": "dep"}, 400, "method 'dep' compares the user with"),
        ({"user_id": user, "method": "dep"}, 409, server["service"].unavailable["dep"]),
    ]:
        r = review(server, **kw)
        assert r.status_code == status and list(r.json()) == ["detail"], r.text
        assert r.json()["detail"].startswith(start)
    # the OpenAI routes add OpenAI's error object, naming the field
    r = httpx.post(server["url"] + "/v1/chat/completions", json=_chat("hi", n=2))
    msg = "n=2 is not supported: one choice per request (send n=1)"
    assert r.status_code == 400
    assert r.json() == {
        "detail": msg,
        "error": {"message": msg, "type": "invalid_request_error", "param": "n", "code": None},
    }


# ----------------------------------------------------------------------------- OpenAI client


def _client(server):
    import openai

    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0)


def test_openai_client_streams_a_chat(server):
    """Issue item 7: ``stream=True`` got a 400. Now server-sent chunks whose deltas join into
    the answer the same request gets without streaming: greedy (the tiny random model's
    greedy answer to a chat is empty) and seeded sampling, as deterministic, with words."""
    client = _client(server)
    for kw in ({"temperature": 0}, {"temperature": 1.0, "seed": 9}):
        ask = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Say something about jazz."}],
            "max_tokens": 32,
            **kw,
        }
        whole = client.chat.completions.create(**ask)
        chunks = list(
            client.chat.completions.create(
                **ask, stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert {c.object for c in chunks} == {"chat.completion.chunk"}
        assert len({c.id for c in chunks}) == 1 and chunks[0].model == "tiny"
        deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        text = whole.choices[0].message.content
        assert "".join(deltas) == text
        assert len([d for d in deltas if d]) == len(text.split())  # word-sized pieces
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finish[:-1] == [None] * (len(finish) - 1)
        assert finish[-1] == whole.choices[0].finish_reason
        assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # include_usage
    assert len(text.split()) >= 2
    with httpx.stream(
        "POST", server["url"] + "/v1/chat/completions", json={**ask, "stream": True}, timeout=60
    ) as r:
        body = r.read().decode()
    assert r.headers["content-type"].startswith("text/event-stream")
    assert body.endswith("data: [DONE]\n\n") and '"usage"' not in body


@pytest.mark.parametrize(
    ("kw", "param", "needle"),
    [
        ({"n": 2}, "n", "one choice per request"),
        ({"logprobs": True}, "logprobs", "no token log-probabilities"),
        ({"top_logprobs": 3}, "top_logprobs", "no token log-probabilities"),
        ({"response_format": {"type": "json_object"}}, "response_format", "only text"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "tools",
            "no function calling",
        ),
        ({"tool_choice": "required"}, "tool_choice", "no function calling"),
        ({"presence_penalty": 0.5}, "presence_penalty", "repetition_penalty"),
        ({"logit_bias": {"5": 10}}, "logit_bias", "not biased"),
        ({"extra_body": {"top_k": 5}}, "top_k", "unrecognized request field 'top_k'"),
    ],
)
def test_openai_client_gets_400_naming_what_is_not_supported(server, kw, param, needle):
    """These were silently ignored (n=2: 422)."""
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        _client(server).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **kw
        )
    assert e.value.status_code == 400 and e.value.param == param
    assert needle in e.value.message and param in e.value.message


def test_only_the_served_model_is_answered(server):
    """Any model name was accepted and echoed; now the one ``/v1/models`` lists."""
    import openai

    client = _client(server)
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.list().data[0].max_model_len == 4096  # the tiny model's context
    for call in (
        lambda: client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        ),
        lambda: client.completions.create(model="tin", prompt="hi"),
    ):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.code == "model_not_found" and e.value.param == "model"
        assert "this service serves ['tiny']" in e.value.message
    assert "did you mean 'tiny'" in e.value.message


def test_completions_answer_a_list_of_prompts_in_order(server):
    """``/v1/completions`` (lm-eval-harness's local-completions): plain-text prompts, one
    choice per prompt, each as the prompt alone gets it; stop strings cut the text."""
    client = _client(server)
    prompts = ["The best jazz album is", "Question: what is a saxophone?\nAnswer:"]
    r = client.completions.create(model="tiny", prompt=prompts, max_tokens=12, temperature=0)
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1]
    texts = [c.text for c in r.choices]
    assert all(isinstance(t, str) for t in texts) and texts[0]
    alone = client.completions.create(model="tiny", prompt=prompts[1], max_tokens=12, temperature=0)
    assert alone.choices[0].text == texts[1]
    assert r.usage.prompt_tokens > alone.usage.prompt_tokens > 0
    # no chat template: the prompt's tokens are its text's (plus the tokenizer's own BOS)
    tok = server["service"].engine.tokenizer
    assert alone.usage.prompt_tokens == len(tok(prompts[1])["input_ids"])
    sampled = {"model": "tiny", "prompt": prompts[0], "max_tokens": 24, "temperature": 1.0}
    text = client.completions.create(**sampled, seed=9).choices[0].text
    stop = text[6:8]
    cut = client.completions.create(**sampled, seed=9, stop=[stop, "never there"]).choices[0]
    assert cut.text == text[: text.find(stop)] and cut.text
    assert cut.finish_reason == "stop"


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"echo": True}, "echo"),
        ({"logprobs": 1}, "logprobs"),
        ({"logprobs": 0}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"stream": True}, "stream"),
        ({"n": 2}, "n"),
        ({"prompt": [[1, 2, 3]]}, "prompt"),
    ],
)
def test_completions_refuse_what_they_do_not_do(server, kw, param):
    import openai

    ask = {"model": "tiny", "prompt": "hi", "max_tokens": 2, **kw}
    with pytest.raises(openai.BadRequestError) as e:
        _client(server).completions.create(**ask)
    assert e.value.param == param


def test_a_cancelled_job_is_skipped_and_the_worker_lives_on():
    """A client that goes away cancels its job's future: the worker skips it (setting the
    result of a cancelled future used to raise on the worker thread)."""
    import threading
    from typing import ClassVar

    from peerdiff.serve import GenerationWorker

    class Echo:
        calls: ClassVar[list] = []

        def chat(self, convs, params, desc=""):
            self.calls.append([c[-1]["content"] for c in convs])
            return [c[-1]["content"] for c in convs]

    gate = threading.Event()
    worker = GenerationWorker(Echo(), max_batch=4, max_wait=0.0)
    blocked = worker.submit_call(gate.wait)  # holds the worker
    time.sleep(0.1)
    gone = worker.submit_chat([{"role": "user", "content": "gone"}], GenParams())
    assert gone.cancel()
    gate.set()
    blocked.result(timeout=10)
    kept = worker.submit_chat([{"role": "user", "content": "kept"}], GenParams())
    assert kept.result(timeout=10).text == "kept"
    worker.close()
    assert Echo.calls == [["kept"]]
