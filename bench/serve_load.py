"""``peerdiff serve`` under a bounded concurrent load on loopback.

    python bench/serve_load.py [--requests 200] [--concurrency 8] [--max-tokens 32] [key=value ...]

Starts the service (default model, the quick config's benchmark) as a separate process,
then sends ``--requests`` requests, ``--concurrency`` at a time: chat completions and
personalized reviews (RAG for known users) mixed 3:1. Prints errors, latency percentiles
and throughput, next to a baseline measured in the same run: the same kind of requests
sent one at a time. Ends with malformed requests, which must all get 4xx answers. Trailing
``key.sub=value`` overrides go to the service's config (``llm.dtype=bfloat16``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bodies(n: int, users: list[str], max_tokens: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append(
                (
                    "/v1/reviews",
                    {
                        "user_id": users[i % len(users)],
                        "method": "rag",
                        "rating": 1 + i % 5,
                        "review_title": f"Thoughts #{i}",
                        "max_new_tokens": max_tokens,
                        "item": {"title": f"Album {i}", "description": "A studio album."},
                    },
                )
            )
        else:
            out.append(
                (
                    "/v1/chat/completions",
                    {
                        "model": "default",
                        "max_tokens": max_tokens,
                        "temperature": 0,
                        "messages": [
                            {
                                "role": "user",
                                "content": f"Write one sentence about album number {i}.",
                            }
                        ],
                    },
                )
            )
    return out


async def load(url: str, reqs: list[tuple[str, dict]], concurrency: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    lat, errors = [], []

    async with httpx.AsyncClient(timeout=600) as client:

        async def one(path, body):
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url + path, json=body)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(p, b) for p, b in reqs))
        wall = time.perf_counter() - t0
    a = np.array(lat)
    return {
        "requests": len(reqs),
        "concurrency": concurrency,
        "errors": len(errors),
        "error_examples": errors[:3],
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(reqs) / wall, 2),
        "latency_s": {
            p: round(float(np.percentile(a, q)), 2)
            for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
    }


MALFORMED = [
    ("/v1/chat/completions", "{broken json"),
    ("/v1/chat/completions", {"model": "x"}),
    ("/v1/chat/completions", {"model": "x", "messages": [{"role": "bot", "content": "hi"}]}),
    (
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
    ),
    (
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ),
    (
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "x" * 40000}]},
    ),
    ("/v1/reviews", {"user_id": "nobody", "item": {"title": "a"}, "rating": 3}),
    ("/v1/reviews", {"item": {"title": "a"}, "rating": 3}),
    ("/v1/reviews", {"user_id": "u", "item": {"title": "a"}, "rating": 11}),
    (
        "/v1/reviews",
        {
            "history": [{"item_title": "a", "rating": 3, "text": "b"}],
            "item": {"title": "a"},
            "rating": 3,
            "method": "dep",
        },
    ),
    ("/v1/reviews", [1, 2, 3]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--baseline-requests", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    a = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peerdiff.cli",
            "serve",
            "--config",
            a.config,
            "--port",
            str(port),
            "--max-batch",
            str(a.concurrency),
            *a.overrides,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("server did not start: " + (proc.stderr.read() if proc.stderr else ""))
        users = []
        from peerdiff import stages
        from peerdiff.config import load_config

        users = stages.data(load_config(a.config, a.overrides), ["nonperso"]).bench.users[:20]
        result = {"max_tokens": a.max_tokens, "overrides": a.overrides}
        base = bodies(a.baseline_requests, users, a.max_tokens)
        result["baseline_sequential"] = asyncio.run(load(url, base, 1))
        result["load"] = asyncio.run(
            load(url, bodies(a.requests, users, a.max_tokens), a.concurrency)
        )
        result["throughput_ratio"] = round(
            result["load"]["requests_per_s"] / result["baseline_sequential"]["requests_per_s"], 2
        )
        codes = []
        for path, body in MALFORMED:
            kw = (
                {"content": body, "headers": {"content-type": "application/json"}}
                if isinstance(body, str)
                else {"json": body}
            )
            codes.append(httpx.post(url + path, timeout=60, **kw).status_code)
        result["malformed_status_codes"] = codes
        result["malformed_all_4xx"] = all(400 <= c < 500 for c in codes)
        result["healthy_after"] = httpx.get(url + "/health").json()["status"]
        print(json.dumps(result, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
