"""Adapter training: the LLM (embeddings and head included) stays frozen; only adapters train.

``loss = LM loss on the target review + recon_weight * (smoothL1 recon + kl_weight * KL)``
(the SAE terms exist for DEP adapters with an SAE). AdamW (weight decay on weight matrices
only) with linear warmup and decay, gradient accumulation, gradient clipping, a seed. The
prompt part before the first soft token runs without gradients and the LM head is applied
only at target positions (:mod:`peerdiff.model.lm`).

:meth:`Trainer.fit` is four steps: :meth:`~Trainer.restore` (resume after the last finished
epoch; log lines of a killed epoch are dropped), :meth:`~Trainer.train_epoch`,
:meth:`~Trainer.checkpoint` (adapter + optimizer/scheduler/RNG state under ``epoch-<n>/``,
the validation score, ``state.json``) and :meth:`~Trainer.select` (the best epoch copied to
``best/``). Per-step losses go to ``log.jsonl``.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from tqdm import tqdm

from peerdiff.config import TrainConfig
from peerdiff.model.adapters import (
    Adapter,
    apply_group_settings,
    load_adapter,
    save_adapter,
    to_tensors,
)
from peerdiff.model.inject import Injector
from peerdiff.model.lm import Example, collate, grad_free_prefix, lm_loss
from peerdiff.stage import read_json, write_json

__all__ = ["Example", "Trainer", "accelerator"]


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


@dataclass
class _Run:
    """What one ``fit`` call carries between its steps."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    model: Any  # the adapter, DDP-wrapped when distributed
    acc: Any
    rank: int = 0
    world: int = 1
    per_epoch: int = 1  # optimizer steps per epoch
    batches: int = 1  # batches per epoch on this process
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.rank == 0


class Trainer:
    """Trains one adapter on top of a frozen LLM.

    Args:
        llm: the frozen causal LM.
        adapter: the trainable module (``adapter_params()``).
        injector: places soft tokens at placeholder positions.
        pad_id: the tokenizer's padding id.
        cfg: optimisation settings.
        lr: this method's learning rate.
        out_dir: checkpoints, logs, ``best/``.
        key: identity of data + settings; a directory made under another key starts over.
        recon_weight, kl_weight: weights of the SAE's loss terms.
        group_settings: a named parameter group's own ``lr`` / ``weight_decay``
            (:meth:`~peerdiff.model.adapters.AdapterBase.param_groups`), e.g. DEP's branch.
        prefix_cache: run the prompt part before the first soft token without gradients.
    """

    def __init__(
        self,
        llm,
        adapter: Adapter,
        injector: Injector,
        *,
        pad_id: int,
        cfg: TrainConfig,
        lr: float,
        out_dir: str | Path,
        key: str,
        seed: int = 0,
        recon_weight: float = 100.0,
        kl_weight: float = 1e-3,
        group_settings: dict[str, dict] | None = None,
        prefix_cache: bool = True,
        name: str = "adapter",
        log_config: dict[str, Any] | None = None,
    ) -> None:
        self.llm = llm
        self.adapter = adapter
        self.injector = injector
        self.pad_id = pad_id
        self.cfg = cfg
        self.lr = lr
        self.dir = Path(out_dir)
        self.key = key
        self.seed = seed
        self.recon_weight = recon_weight
        self.kl_weight = kl_weight
        self.group_settings = group_settings or {}
        self.prefix_cache = prefix_cache
        self.name = name
        self.log_config = log_config or {}
        self.logger: Any = None
        self.device = next(llm.parameters()).device
        for p in llm.parameters():
            p.requires_grad_(False)
        llm.eval()

    # ------------------------------------------------------------------ one batch
    def loss(
        self, batch: dict[str, torch.Tensor], feats: dict[str, torch.Tensor], model=None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's loss and its parts; under bfloat16 autocast with
        ``train.precision=bfloat16`` (parameters and gradients stay float32)."""
        amp = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.cfg.precision == "bfloat16"
            else contextlib.nullcontext()
        )
        with amp:
            soft, aux = (model or self.adapter)(feats)
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
            total = total + self.recon_weight * (aux["recon"] + self.kl_weight * aux["kl"])
            parts["recon"] = float(aux["recon"].detach())
            parts["kl"] = float(aux["kl"].detach())
        return total, parts

    # ------------------------------------------------------------------ fit
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
        from peerdiff.tracking import NullLogger, make_logger

        run = self.restore(len(examples))
        done = len(run.state["epochs"])
        self.logger = (
            make_logger(
                list(self.cfg.log_to),
                self.dir,
                self.name,
                self.log_config,
                purge_step=done * run.batches + 1 if done else None,
            )
            if run.main
            else NullLogger()
        )
        try:
            for epoch in range(done + 1, self.cfg.epochs + 1):
                t0 = time.time()
                losses, n_tokens = self.train_epoch(run, epoch, examples, features)
                self.checkpoint(run, epoch, losses, n_tokens, time.time() - t0, validate)
        finally:
            self.logger.close()
        return self.select(run)

    def restore(self, n_examples: int) -> _Run:
        """Optimizer, schedule and state; after a finished epoch, its checkpoint is loaded and
        the log is cut to the finished epochs (a killed epoch's lines are dropped)."""
        cfg = self.cfg
        acc = accelerator()
        rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._state()
        groups = self.adapter.param_groups(cfg.weight_decay)
        opt = torch.optim.AdamW(
            apply_group_settings(groups, self.group_settings, self.lr),
            lr=self.lr,
        )
        per_epoch = math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum * world))
        batches = math.ceil(math.ceil(n_examples / cfg.batch_size) / world)
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
            self.adapter.load_state_dict(load_adapter(last, self.device).state_dict())
            ts = torch.load(last / "trainer_state.pt", weights_only=False)
            opt.load_state_dict(ts["optimizer"])
            sched.load_state_dict(ts["scheduler"])
            torch.set_rng_state(ts["torch_rng"])
        if rank == 0:
            self._truncate_log(done)
        model = self.adapter
        if acc:  # DDP: gradients averaged over processes
            model, opt = acc.prepare(self.adapter, opt)
        return _Run(opt, sched, model, acc, rank, world, per_epoch, batches, state)

    def train_epoch(
        self, run: _Run, epoch: int, examples: Sequence[Example], features: dict[str, np.ndarray]
    ) -> tuple[list[float], int]:
        """One pass over ``examples`` in a seeded order. Returns (losses per batch, tokens)."""
        cfg = self.cfg
        t0 = time.time()
        rng = random.Random(self.seed * 1000 + epoch)
        order = list(range(len(examples)))
        rng.shuffle(order)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        if run.world > 1:  # every process takes the same number of batches
            need = math.ceil(len(batches) / run.world) * run.world
            batches = (batches + batches[: need - len(batches)])[run.rank :: run.world]
        params = self.adapter.adapter_params()
        run.model.train()
        bar = tqdm(
            total=len(batches),
            desc=f"train epoch {epoch}/{cfg.epochs}",
            unit="batch",
            disable=not run.main,
        )
        losses: list[float] = []
        n_tokens = 0
        step = (epoch - 1) * run.per_epoch
        run.opt.zero_grad(set_to_none=True)
        log = open(self.dir / "log.jsonl", "ab") if run.main else None  # noqa: SIM115 (closed below)
        try:
            for b, idx in enumerate(batches):
                batch = collate(
                    [examples[i] for i in idx],
                    self.pad_id,
                    self.device,
                    is_placeholder=self.injector.table >= 0,
                )
                feats = to_tensors(features, idx, self.device)
                loss, parts = self.loss(batch, feats, run.model)
                if run.acc:
                    run.acc.backward(loss / cfg.grad_accum)
                else:
                    (loss / cfg.grad_accum).backward()
                losses.append(float(loss.detach()))
                n_tokens += int(batch["attention_mask"].sum())
                if (b + 1) % cfg.grad_accum == 0 or b + 1 == len(batches):
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    run.opt.step()
                    run.sched.step()
                    run.opt.zero_grad(set_to_none=True)
                    step += 1
                self.logger.scalars(
                    (epoch - 1) * run.batches + b + 1,
                    **{f"train/{k}": v for k, v in parts.items()},
                    **{"train/loss": losses[-1], "train/lr": run.sched.get_last_lr()[0]},
                )
                if log is not None:
                    rec = {
                        "epoch": epoch,
                        "batch": b,
                        "step": step,
                        "loss": losses[-1],
                        **parts,
                        "lr": run.sched.get_last_lr()[0],
                        "tokens": n_tokens,
                        "seconds": round(time.time() - t0, 3),
                    }
                    log.write(orjson.dumps(rec) + b"\n")
                    log.flush()
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                bar.update()
        finally:
            bar.close()
            if log is not None:
                log.close()
        run.model.eval()
        if run.acc:
            n_tokens = int(run.acc.reduce(torch.tensor(n_tokens, device=run.acc.device), "sum"))
        return losses, n_tokens

    def checkpoint(
        self,
        run: _Run,
        epoch: int,
        losses: list[float],
        n_tokens: int,
        train_seconds: float,
        validate: Callable[[Adapter], float] | None,
    ) -> None:
        """Save the epoch (main process), score it, record it in ``state.json``."""
        if run.main:
            t0 = time.time()
            ep_dir = self.dir / f"epoch-{epoch}"
            save_adapter(self.adapter, ep_dir)
            torch.save(
                {
                    "optimizer": run.opt.state_dict(),
                    "scheduler": run.sched.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                },
                ep_dir / "trainer_state.pt",
            )
            score = (
                float(validate(self.adapter)) if validate is not None else -float(np.mean(losses))
            )
            run.state["epochs"].append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)),
                    "val_score": score,
                    "train_seconds": round(train_seconds, 1),
                    "val_seconds": round(time.time() - t0, 1),
                    "tokens": n_tokens,
                    "processes": run.world,
                }
            )
            write_json(self.dir / "state.json", run.state)
            self.logger.scalars(
                epoch * run.batches,
                **{"epoch/train_loss": float(np.mean(losses)), "epoch/val_score": score},
            )
        if run.acc:
            run.acc.wait_for_everyone()

    def select(self, run: _Run) -> dict[str, Any]:
        """Copy the best epoch to ``best/`` (main process) and return the final state."""
        state = run.state
        if run.main:
            best = max(state["epochs"], key=lambda e: e["val_score"])
            state["best_epoch"] = best["epoch"]
            tmp = self.dir / ".best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.dir / f"epoch-{best['epoch']}", tmp)
            (tmp / "trainer_state.pt").unlink(missing_ok=True)
            shutil.rmtree(self.dir / "best", ignore_errors=True)
            tmp.rename(self.dir / "best")
            write_json(self.dir / "state.json", state)
        if run.acc:
            run.acc.wait_for_everyone()
            state = read_json(self.dir / "state.json")
        return state

    # ------------------------------------------------------------------ files
    def _state(self) -> dict[str, Any]:
        f = self.dir / "state.json"
        st = read_json(f) if f.exists() else {}
        if st.get("key") != self.key:
            for old in self.dir.glob("epoch-*"):
                shutil.rmtree(old)
            (self.dir / "log.jsonl").unlink(missing_ok=True)
            st = {"key": self.key, "epochs": []}
        return st

    def _truncate_log(self, done: int) -> None:
        """Keep only the log lines of the first ``done`` epochs (atomically)."""
        from peerdiff.stage import atomic_path

        path = self.dir / "log.jsonl"
        if not path.exists():
            return
        lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]
        keep = []
        for ln in lines:
            try:
                if orjson.loads(ln)["epoch"] <= done:
                    keep.append(ln)
            except (orjson.JSONDecodeError, KeyError):
                continue  # a torn line from a kill
        if len(keep) != len(lines):
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"".join(ln + b"\n" for ln in keep))
