"""DEP training throughput on CPU: tokens/s of training steps vs the machine's compute limit.

    python bench/training.py [--examples 32] [--batch 4]

Measured in one run on the quick job's DEP training examples (real prompts and targets):

- the compute limit: fp32 matrix products of the model's own shapes (GFLOP/s);
- the project's training step (``peerdiff.train.Trainer``: grad-free prompt prefix through a
  KV cache, LM head only at target positions, AdamW step);
- a baseline step: the same adapter and loss, but one plain forward over the whole sequence
  with logits at every position (what ``model(inputs_embeds, labels=...)`` does);
- the project's step under bfloat16 autocast (``train.precision=bfloat16``), its speed-up
  over float32 and how far its loss moves from the float32 loss on the same batches.

FLOPs per token: ``2 P`` (P = non-embedding parameters) plus attention ``4 L d`` per layer
for the forward; the same again backward for positions after the grad-free prefix (input
gradients only: the LLM is frozen); ``2 d V`` forward + backward for the LM head where it
runs. Goal: >= 40% of the compute limit.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from peerdiff import methods, stages
from peerdiff.backends import Backends
from peerdiff.config import load_config
from peerdiff.model.adapters import build_adapter, to_tensors
from peerdiff.model.lm import Example, collate, grad_free_prefix
from peerdiff.stages.common import injector, target_ids, token_counter
from peerdiff.train import Trainer


def matmul_gflops(d: int, ff: int, rows: int = 512, reps: int = 20) -> float:
    a = torch.randn(rows, d)
    w1, w2 = torch.randn(d, ff), torch.randn(ff, d)
    for _ in range(3):
        (a @ w1) @ w2
    t0 = time.perf_counter()
    for _ in range(reps):
        (a @ w1) @ w2
    return reps * 2 * 2 * rows * d * ff / (time.perf_counter() - t0) / 1e9


def step_flops(model, batch, split: int, head_everywhere: bool) -> float:
    c = model.config
    d, L, V = c.hidden_size, c.num_hidden_layers, c.vocab_size
    P = sum(
        p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n
    )
    mask = batch["attention_mask"]
    n_tok = float(mask.sum())
    ctx = mask.cumsum(-1).float()  # attended keys per position
    attn = float((4 * d * L * ctx * mask).sum())
    fwd = 2 * P * n_tok + attn
    grad_tok = float(mask[:, split:].sum())
    bwd = 2 * P * grad_tok + float((4 * d * L * ctx * mask)[:, split:].sum())
    targets = float((batch["labels"] != -100).sum())
    head = 2 * d * V * (n_tok if head_everywhere else targets) + 2 * d * V * targets
    return fwd + bwd + head


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(a.config)
    data = stages.data(cfg, ["dep"])
    backends = Backends(cfg)
    be = backends.local
    model = be.model
    m = methods.build("dep", cfg)
    inj = injector(m, backends)
    ctx = data.context(cfg, methods.get("dep").needs, token_counter(be))
    torch.manual_seed(0)
    adapter = build_adapter(m.adapter_config(ctx.contrast.dim, model.config.hidden_size))
    samples = stages.train_samples(cfg, data.bench)[: a.examples]
    P = m.prompts(samples, ctx)
    n = cfg.train.max_target_tokens
    ex = [
        Example(be.encode(c), target_ids(be.tokenizer, data.bench.texts[x.target], n))
        for x, c in zip(samples, P.conversations)
    ]
    feats = P.features
    order = np.argsort([len(e.prompt_ids) + len(e.target_ids) for e in ex])  # similar lengths
    batches = [order[i : i + a.batch].tolist() for i in range(0, len(order), a.batch)]
    limit = matmul_gflops(model.config.hidden_size, model.config.intermediate_size)
    tr = Trainer(
        model,
        adapter,
        inj,
        pad_id=be.tokenizer.pad_token_id,
        cfg=cfg.train,
        lr=1e-4,
        out_dir="/tmp/bench-train",
        key="b",
        **m.loss_weights(),
    )
    tr16 = Trainer(
        model,
        adapter,
        inj,
        pad_id=be.tokenizer.pad_token_id,
        cfg=replace(cfg.train, precision="bfloat16"),
        lr=1e-4,
        out_dir="/tmp/bench-train",
        key="b",
        **m.loss_weights(),
    )
    opt = torch.optim.AdamW(adapter.adapter_params(), lr=1e-4)
    start = {k: v.clone() for k, v in adapter.state_dict().items()}
    losses: dict[str, list[float]] = {}

    def run(kind: str) -> dict:
        flops = tok = 0.0
        adapter.load_state_dict(start)  # every kind steps the same adapter from the same start
        opt.state.clear()
        losses[kind] = []
        t0 = time.perf_counter()
        for idx in batches:
            batch = collate(
                [ex[i] for i in idx],
                be.tokenizer.pad_token_id,
                be.device,
                is_placeholder=inj.table >= 0,
            )
            f = to_tensors(feats, idx, be.device)
            if kind in ("project", "project-bf16"):
                loss, _ = (tr if kind == "project" else tr16).loss(batch, f)
                split = grad_free_prefix(batch["input_ids"], inj.table >= 0)
            else:  # plain forward with logits everywhere, HF-style loss
                soft, aux = adapter(f)
                out = model(
                    inputs_embeds=inj(batch["input_ids"], soft),
                    attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"],
                )
                logits = out.logits[:, :-1].float()
                lab = batch["labels"][:, 1:]
                loss = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), ignore_index=-100
                )
                loss = loss + 100 * (aux["recon"] + 1e-3 * aux["kl"])
                split = 0
            losses[kind].append(float(loss.detach()))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            flops += step_flops(model, batch, split, head_everywhere=kind == "baseline")
            tok += float(batch["attention_mask"].sum())
        dt = time.perf_counter() - t0
        useful = sum(
            step_flops(model, collate([ex[i] for i in idx], 0, "cpu"), 0, False) for idx in batches
        )  # the work of the plain computation, same for both
        return {
            "seconds": round(dt, 1),
            "tokens_per_s": round(tok / dt, 1),
            "executed_gflop_per_s": round(flops / dt / 1e9, 1),
            "model_gflop_per_s": round(useful / dt / 1e9, 1),
        }

    result = {
        "threads": torch.get_num_threads(),
        "examples": len(ex),
        "batch": a.batch,
        "mean_tokens_per_example": round(
            np.mean([len(e.prompt_ids) + len(e.target_ids) for e in ex]), 1
        ),
        "matmul_limit_gflop_per_s": round(limit, 1),
    }
    run("project")  # warm-up (allocator, threads)
    result["baseline"] = run("baseline")
    result["project"] = run("project")
    result["project-bf16"] = run("project-bf16")
    result["speedup"] = round(result["baseline"]["seconds"] / result["project"]["seconds"], 2)
    result["bf16_speedup"] = round(
        result["project"]["seconds"] / result["project-bf16"]["seconds"], 2
    )
    d = np.abs(np.array(losses["project-bf16"]) - np.array(losses["project"]))
    result["bf16_loss_abs_diff"] = {
        "mean": round(float(d.mean()), 4),
        "max": round(float(d.max()), 4),
    }
    for k in ("baseline", "project", "project-bf16"):
        result[k]["share_of_limit"] = round(result[k]["executed_gflop_per_s"] / limit, 3)
        result[k]["tokens_per_s_at_limit"] = round(
            result[k]["tokens_per_s"] * limit / result[k]["executed_gflop_per_s"], 1
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
