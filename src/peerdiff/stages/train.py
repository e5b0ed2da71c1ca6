"""The train stage: one soft-prompt method's adapter on the frozen local LLM.

Keyed on the method's prompt settings, the data stages it reads, ``train``, the LLM's
model and dtype, the seed and -- only when epochs are selected by METEOR -- the validation
decoding. Generation settings never enter the key: a decoding change never retrains.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace

import numpy as np

from peerdiff import methods
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.data.schema import Sample
from peerdiff.errors import MissingStageError
from peerdiff.stage import Stage, fingerprint
from peerdiff.stages.common import (
    SOFT_FORMAT,
    MethodSplit,
    target_ids,
    train_samples,
)
from peerdiff.stages.data import Data

log = logging.getLogger(__name__)


def validation_params(cfg: RunConfig) -> GenParams:
    """Decoding for METEOR selection: ``train.val_max_new_tokens``, no penalty; greedy, or
    sampled with ``train.val_temperature`` / ``val_top_p`` (the DEP code's selection)."""
    t = cfg.train
    if not t.val_do_sample:
        return GenParams(max_new_tokens=t.val_max_new_tokens, seed=cfg.seed)
    return GenParams(
        max_new_tokens=t.val_max_new_tokens,
        do_sample=True,
        temperature=t.val_temperature,
        top_p=t.val_top_p,
        seed=cfg.seed,
    )


def train_settings(cfg: RunConfig, name: str) -> dict:
    """``train`` as method ``name`` trains: its own rate (``train.lr`` only as its default)
    and the precision ``auto`` resolves to here."""
    from peerdiff.device import training_precision

    return {
        **asdict(cfg.train),
        "lr": methods.build(name, cfg).lr(),
        "precision": training_precision(cfg.train.precision, cfg.llm.device),
    }


def train_key(cfg: RunConfig, name: str, data: Data) -> str:
    from peerdiff.model.llm import dtype_name

    spec = methods.get(name)
    t = train_settings(cfg, name)
    t.pop("log_to")  # where curves go changes nothing that is computed
    val_decoding = None
    if cfg.train.select_by == "meteor":
        val_decoding = asdict(validation_params(cfg))
    else:
        for k in ("val_max_new_tokens", "val_do_sample", "val_temperature", "val_top_p"):
            t.pop(k)
    return fingerprint(
        SOFT_FORMAT,
        name,
        spec.settings(cfg),
        data.keys(spec.needs),
        t,
        {"model": cfg.llm.model, "dtype": dtype_name(cfg.llm.dtype, cfg.llm.device)},
        cfg.seed,
        val_decoding,
    )


def check_loggers_for(cfg: RunConfig, names: list[str], data: Data) -> None:
    """Before any method trains: the packages of ``train.log_to`` are installed, when one of
    ``names`` still has training to do (a run that only reads its adapters needs none).

    Raises:
        DependencyError: names the extra to install.
    """
    from peerdiff.tracking import check_loggers

    todo = [
        n
        for n in names
        if methods.get(n).soft
        and not Stage(cfg.run_path / "train", n).is_done(train_key(cfg, n, data))
    ]
    if todo:
        check_loggers(cfg.train.log_to)


def trained(cfg: RunConfig, name: str, data: Data) -> Stage:
    """The train stage of ``name`` when it finished under the current settings.

    Raises:
        MissingStageError: not trained, or trained under other settings (names the command).
    """
    st = Stage(cfg.run_path / "train", name)
    if not st.is_done(train_key(cfg, name, data)):
        why = "trained under other settings" if st.manifest() else "not trained"
        raise MissingStageError(
            f"method {name!r} has no adapter for these settings ({why}); train it: "
            f"`peerdiff train --method {name}` (or `peerdiff run`)"
        )
    return st


def train(cfg: RunConfig, name: str, data: Data, backends: Backends) -> Stage:
    """``peerdiff train``: fit one soft-prompt method's adapter; ``best/`` is the selection."""
    import torch

    from peerdiff.hub import model_revision, write_model_card
    from peerdiff.model.adapters import build_adapter
    from peerdiff.model.lm import Example
    from peerdiff.train import Trainer

    spec = methods.get(name)
    if not spec.soft:
        raise ValueError(f"{name!r} has no adapter to train")
    st = Stage(cfg.run_path / "train", name)
    key = train_key(cfg, name, data)
    if st.is_done(key):
        return st
    t0 = time.time()
    be = backends.local  # training always runs in transformers
    settings = train_settings(cfg, name)
    items = train_samples(cfg, data.bench)
    ms = MethodSplit(cfg, name, "train", data, backends, items=items)
    m, inj = ms.method, ms.injector()
    P = ms.prompts(be)
    targets = ms.targets(be.tokenizer, cfg.train.max_target_tokens)
    examples = [Example(p, t) for p, t in zip(ms.encoded(be), targets)]
    torch.manual_seed(cfg.seed)
    dim = data.vectors.shape[1] if data.emb is not None else 1
    acfg = m.adapter_config(dim, be.model.config.hidden_size)
    acfg.base_model_revision = model_revision(getattr(be, "path", None))
    if data.emb is not None:  # the encoder whose vectors the adapter reads
        enc = data.emb.manifest()["encoder"]
        acfg.encoder, acfg.encoder_key = enc["name"], enc["key"]
    adapter = build_adapter(acfg, be.model.get_input_embeddings()).to(be.device)
    if hasattr(adapter, "fit_statistics"):
        adapter.fit_statistics(P.features)
    val = data.bench.samples("val")[: cfg.train.val_samples]
    validate, metric = _validator(cfg, m, val, ms.context(be), be, inj, data)
    trainer = Trainer(
        be.model,
        adapter,
        inj,
        pad_id=be.tokenizer.pad_token_id,
        cfg=replace(cfg.train, precision=settings["precision"]),
        lr=settings["lr"],
        out_dir=st.dir,
        key=key,
        seed=cfg.seed,
        **m.loss_weights(),
        group_settings=m.group_settings(),
        name=f"{cfg.name}-{name}",
        log_config={"method": name, **spec.settings(cfg), "train": settings},
    )
    state = trainer.fit(examples, P.features, validate)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        if not PartialState().is_main_process:
            return st
    st.finish(
        key,
        {"method": name, "train": settings, "settings": spec.settings(cfg)},
        ["best/adapter.safetensors", "best/adapter_config.json", "state.json", "log.jsonl"],
        state=state,
        seconds=round(time.time() - t0, 1),
        train_samples=len(items),
        users=len({s.user_id for s in items}),
        prompt_tokens_mean=round(float(np.mean([len(e.prompt_ids) for e in examples])), 1),
        val_samples=len(val),
        val_metric=metric,
        lr=settings["lr"],
        trainable_parameters=sum(p.numel() for p in adapter.adapter_params()),
    )
    write_model_card(cfg.run_path, name)
    return st


def _validator(cfg: RunConfig, m, val: list[Sample], ctx, be, inj, data: Data):
    """``(validate(adapter) -> score (higher is better), metric name)``."""
    from peerdiff import metrics
    from peerdiff.generate import soft_generate_fn
    from peerdiff.methods.prompts import strip_prefix
    from peerdiff.model.adapters import soft_fn
    from peerdiff.model.lm import target_nll

    P = m.prompts(val, ctx)
    prompts = [be.encode(c, True) for c in P.conversations]
    if cfg.train.select_by == "nll":
        targets = [
            target_ids(be.tokenizer, data.bench.texts[s.target], cfg.train.max_target_tokens)
            for s in val
        ]

        def validate_nll(adapter) -> float:
            sums, counts = target_nll(
                be.model,
                be.tokenizer.pad_token_id,
                prompts,
                targets,
                soft=soft_fn(adapter, P.features, be.device),
                injector=inj,
                batch_size=cfg.generate.batch_size,
                desc="validate (nll)",
            )
            return -float(np.mean(sums / np.maximum(counts, 1)))

        return validate_nll, "neg_nll"

    refs = [data.bench.texts[s.target] for s in val]
    problem = metrics.setup_wordnet(cfg.cache_dir)
    metric = "meteor" if problem is None else "rougeL"
    if problem:
        log.warning("selecting epochs by ROUGE-L: %s", problem)
    params = validation_params(cfg)

    def validate_text(adapter) -> float:
        gen = soft_generate_fn(be, inj, adapter, prompts, P.features, params, "validate")
        preds = [strip_prefix(p) for p in gen(list(range(len(val))))]
        score = metrics.meteor(preds, refs) if metric == "meteor" else metrics.rouge(preds, refs)[1]
        return float(np.mean(score)) if len(score) else 0.0

    return validate_text, metric
