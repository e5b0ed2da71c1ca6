"""Adapter training: the LLM (embeddings and head included) stays frozen; only adapters train.

``loss = LM loss on the target review + recon_weight * (smoothL1 recon + kl_weight * KL)``
(the SAE terms exist for DEP adapters with an SAE). AdamW with linear warmup and decay,
gradient accumulation, gradient clipping, a seed. The LM head is applied only at target
positions (the prompt's logits are never needed), which saves about a fifth of the compute
of a SmolLM2 forward pass.

Each epoch writes a checkpoint (adapter + optimizer/scheduler/RNG state) under
``epoch-<n>/``, scores the validation samples (METEOR of greedy generations), and appends
to ``epochs.json``; the best epoch is copied to ``best/``. A re-run with the same settings
resumes after the last finished epoch; per-step losses go to ``log.jsonl``.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
import torch.nn.functional as F
from tqdm import tqdm

from peerdiff.config import TrainConfig
from peerdiff.model.adapters import Adapter, load_adapter, save_adapter
from peerdiff.model.inject import Injector
from peerdiff.stage import read_json, write_json


@dataclass
class Example:
    """One training sequence: prompt ids (with placeholders) and target ids (with EOS)."""

    prompt_ids: list[int]
    target_ids: list[int]


def collate(
    examples: Sequence[Example], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask``, ``position_ids`` and ``labels``."""
    seqs = [e.prompt_ids + e.target_ids for e in examples]
    width = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    labels = torch.full((B, width), -100, dtype=torch.long)
    for i, (e, s) in enumerate(zip(examples, seqs)):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
        labels[i, width - len(e.target_ids) :] = torch.tensor(e.target_ids)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": pos.to(device),
        "labels": labels.to(device),
    }


def to_tensors(
    features: dict[str, np.ndarray], idx: Sequence[int], device
) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in features.items():
        t = torch.from_numpy(np.ascontiguousarray(v[list(idx)]))
        out[k] = t.to(device) if t.dtype == torch.bool else t.float().to(device)
    return out


def lm_loss(
    llm, embeds: torch.Tensor, batch: dict[str, torch.Tensor], split: int = 0
) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens, LM head only where labels exist.

    Args:
        split: columns ``[0, split)`` hold no soft token and no target: they run without
            gradients and reach the rest of the sequence as a KV cache (same loss and
            gradients, less backward work). ``0`` runs everything with gradients.
    """
    decoder = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model
    mask, pos = batch["attention_mask"], batch["position_ids"]
    past = None
    if split > 0:
        with torch.no_grad():
            past = decoder(
                inputs_embeds=embeds[:, :split],
                attention_mask=mask[:, :split],
                position_ids=pos[:, :split],
                use_cache=True,
            ).past_key_values
    h = decoder(
        inputs_embeds=embeds[:, split:],
        attention_mask=mask,
        position_ids=pos[:, split:],
        past_key_values=past,
        use_cache=past is not None,
    ).last_hidden_state
    labels = batch["labels"][:, split + 1 :]
    sel = labels != -100
    logits = llm.get_output_embeddings()(h[:, :-1][sel])
    return F.cross_entropy(logits.float(), labels[sel])


def grad_free_prefix(input_ids: torch.Tensor, is_placeholder: torch.Tensor) -> int:
    """Columns before the first placeholder in any row (no gradient can flow there)."""
    hit = is_placeholder[input_ids].any(0)
    return int(hit.float().argmax()) if hit.any() else 0


def accelerator():
    """An ``accelerate.Accelerator`` when launched with several processes, else ``None``.

    ``accelerate launch --num_processes N peerdiff train ...`` trains one adapter with DDP:
    each process takes every N-th batch, gradients are averaged, the main process validates
    and writes checkpoints.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator

    # without CUDA, accelerate ignores torchrun's processes unless told to use the CPU (gloo)
    return Accelerator(cpu=not torch.cuda.is_available())


class Trainer:
    """Trains one adapter on top of a frozen LLM.

    Args:
        llm: the frozen causal LM.
        adapter: the trainable module (``adapter_params()``).
        injector: places soft tokens at placeholder positions.
        cfg: optimisation settings.
        out_dir: checkpoints, logs, ``best/``.
        key: identity of data + settings; a directory made under another key starts over.
        prefix_cache: run the prompt part before the first soft token without gradients.
    """

    def __init__(
        self,
        llm,
        adapter: Adapter,
        injector: Injector,
        pad_id: int,
        cfg: TrainConfig,
        out_dir: str | Path,
        key: str,
        seed: int = 0,
        prefix_cache: bool = True,
    ) -> None:
        self.prefix_cache = prefix_cache
        self.llm = llm
        self.adapter = adapter
        self.injector = injector
        self.pad_id = pad_id
        self.cfg = cfg
        self.dir = Path(out_dir)
        self.key = key
        self.seed = seed
        self.device = next(llm.parameters()).device
        for p in llm.parameters():
            p.requires_grad_(False)
        llm.eval()

    def loss(self, batch: dict[str, torch.Tensor], feats: dict[str, torch.Tensor]):
        soft, aux = self.adapter(feats)
        embeds = self.injector(batch["input_ids"], soft)
        split = (
            grad_free_prefix(batch["input_ids"], self.injector.table >= 0)
            if self.prefix_cache
            else 0
        )
        lm = lm_loss(self.llm, embeds, batch, split)
        total = lm
        parts = {"lm": float(lm.detach())}
        if "recon" in aux:
            total = total + self.cfg.recon_weight * (aux["recon"] + self.cfg.kl_weight * aux["kl"])
            parts["recon"] = float(aux["recon"].detach())
            parts["kl"] = float(aux["kl"].detach())
        return total, parts

    def _state(self) -> dict[str, Any]:
        f = self.dir / "state.json"
        st = read_json(f) if f.exists() else {}
        if st.get("key") != self.key:
            for old in self.dir.glob("epoch-*"):
                shutil.rmtree(old)
            (self.dir / "log.jsonl").unlink(missing_ok=True)
            st = {"key": self.key, "epochs": []}
        return st

    def fit(
        self,
        examples: Sequence[Example],
        features: dict[str, np.ndarray],
        validate: Callable[[Adapter], float] | None = None,
    ) -> dict[str, Any]:
        """Train for ``cfg.epochs`` epochs (resuming), then write ``best/``.

        Args:
            examples: training sequences; ``features`` rows are aligned with them.
            validate: adapter -> validation score (higher is better), called per epoch.

        Returns:
            The state: per-epoch records and the best epoch.
        """
        cfg = self.cfg
        acc = accelerator()
        rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
        main = rank == 0
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._state()
        core = self.adapter  # the unwrapped module: saving, loading, validation
        params = core.adapter_params()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.grad_accum * world))
        total = max(1, per_epoch * cfg.epochs)
        warm = max(1, int(cfg.warmup_ratio * total)) if cfg.warmup_ratio > 0 else 0

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        done = len(state["epochs"])
        if done:
            last = self.dir / f"epoch-{done}"
            core.load_state_dict(load_adapter(last, self.device).state_dict())
            ts = torch.load(last / "trainer_state.pt", weights_only=False)
            opt.load_state_dict(ts["optimizer"])
            sched.load_state_dict(ts["scheduler"])
            torch.set_rng_state(ts["torch_rng"])
        model = core
        if acc:  # DDP: gradients averaged over processes
            model, opt = acc.prepare(core, opt)
        self.adapter = model
        step = done * per_epoch
        log = open(self.dir / "log.jsonl", "ab") if main else None
        for epoch in range(done + 1, cfg.epochs + 1):
            t0 = time.time()
            rng = random.Random(self.seed * 1000 + epoch)
            order = list(range(len(examples)))
            rng.shuffle(order)
            batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            if world > 1:  # every process takes the same number of batches
                need = math.ceil(len(batches) / world) * world
                batches = (batches + batches[: need - len(batches)])[rank::world]
            model.train()
            bar = tqdm(
                total=len(batches),
                desc=f"train epoch {epoch}/{cfg.epochs}",
                unit="batch",
                disable=not main,
            )
            losses = []
            opt.zero_grad(set_to_none=True)
            n_tokens = 0
            for b, idx in enumerate(batches):
                batch = collate([examples[i] for i in idx], self.pad_id, self.device)
                feats = to_tensors(features, idx, self.device)
                loss, parts = self.loss(batch, feats)
                if acc:
                    acc.backward(loss / cfg.grad_accum)
                else:
                    (loss / cfg.grad_accum).backward()
                losses.append(float(loss.detach()))
                n_tokens += int(batch["attention_mask"].sum())
                if (b + 1) % cfg.grad_accum == 0 or b + 1 == len(batches):
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    step += 1
                if log is not None:
                    rec = {
                        "epoch": epoch,
                        "batch": b,
                        "step": step,
                        "loss": losses[-1],
                        **parts,
                        "lr": sched.get_last_lr()[0],
                        "tokens": n_tokens,
                        "seconds": round(time.time() - t0, 3),
                    }
                    log.write(orjson.dumps(rec) + b"\n")
                    log.flush()
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                bar.update()
            bar.close()
            model.eval()
            train_seconds = time.time() - t0
            if acc:
                n_tokens = int(acc.reduce(torch.tensor(n_tokens, device=acc.device), "sum"))
            if main:
                ep_dir = self.dir / f"epoch-{epoch}"
                save_adapter(core, ep_dir)
                torch.save(
                    {
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                    },
                    ep_dir / "trainer_state.pt",
                )
                score = float(validate(core)) if validate is not None else -float(np.mean(losses))
                state["epochs"].append(
                    {
                        "epoch": epoch,
                        "train_loss": float(np.mean(losses)),
                        "val_score": score,
                        "train_seconds": round(train_seconds, 1),
                        "val_seconds": round(time.time() - t0 - train_seconds, 1),
                        "tokens": n_tokens,
                        "processes": world,
                    }
                )
                write_json(self.dir / "state.json", state)
            if acc:
                acc.wait_for_everyone()
        if log is not None:
            log.close()
        self.adapter = core
        if main:
            best = max(state["epochs"], key=lambda e: e["val_score"])
            state["best_epoch"] = best["epoch"]
            tmp = self.dir / ".best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.dir / f"epoch-{best['epoch']}", tmp)
            (tmp / "trainer_state.pt").unlink(missing_ok=True)
            shutil.rmtree(self.dir / "best", ignore_errors=True)
            tmp.rename(self.dir / "best")
            write_json(self.dir / "state.json", state)
        if acc:
            acc.wait_for_everyone()
            state = read_json(self.dir / "state.json")
        return state
