"""The published profile of the prompt-based family, how a run deviates from it, and the dry run.

:data:`PAPER` holds the settings of the DPL/DRP reference code that peerdiff exposes (8
compared items, 8 past reviews, 4 representative peers, nothing clipped, descriptions in
past-review blocks, the reference generator prompt, whitespace BM25, no repetition penalty,
large budgets). ``configs/paper.yaml`` sets them; the CPU configs cut them to fit a 135M
model on 2 cores, and :func:`deviations` lists every cut so reports say so.

:func:`dry_run` builds every configured method's prompts for a few samples without calling
any model (intermediate outputs are placeholders of their full budget) and reports prompt
lengths against ``prompt.max_prompt_tokens`` and each role's budget. It never downloads:
:func:`missing_inputs` lists what the run needs that is not on this machine (data, the LLM,
the encoder, the BERTScore model), and prompts are built only for the methods whose inputs
are there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from peerdiff.config import RunConfig

# key -> (published value, how it is compared: "eq" or "min")
PAPER: dict[str, tuple[Any, str]] = {
    "pipeline.n_items": (8, "eq"),
    "pipeline.past_reviews": (8, "eq"),
    "pipeline.n_peers": (4, "eq"),
    "pipeline.min_peers": (4, "eq"),
    "pipeline.max_review_chars": (None, "eq"),
    "prompt.max_desc_chars": (None, "eq"),
    "prompt.max_review_chars": (None, "eq"),
    "prompt.past_descriptions": (True, "eq"),
    "prompt.style": ("reference", "eq"),
    "rag.k": (8, "eq"),
    "rag.tokenizer": ("dpl", "eq"),
    "generate.repetition_penalty": (1.0, "eq"),
    "generate.max_new_tokens": (512, "min"),
    "pipeline.extract_max_tokens": (512, "min"),
    "pipeline.validate_max_tokens": (512, "min"),
    "pipeline.summary_max_tokens": (512, "min"),
    "generate.do_sample": (True, "eq"),
    "generate.temperature": (0.8, "eq"),
    "generate.top_p": (0.95, "eq"),
    # DEP (its reference code): the text layout with every slot's full text, 8 slots, the
    # adapter as published, and its training and epoch selection
    "dep.layout": ("text", "eq"),
    "dep.text_reviews": (8, "eq"),
    "dep.compact": (False, "eq"),
    "dep.max_review_chars": (None, "eq"),
    "dep.max_prompt_tokens": (3072, "eq"),
    "dep.residual": (False, "eq"),
    "dep.feature_dropout": (0.0, "eq"),
    "dep.pool_slots": (False, "eq"),
    "dep.branch_rank": (None, "eq"),
    "dep.branch_lr": (None, "eq"),
    "dep.branch_weight_decay": (None, "eq"),
    "dep.init": ("reference", "eq"),
    "dep.features": ("raw", "eq"),
    "dep.recon_weight": (100.0, "eq"),
    "dep.kl_weight": (1e-3, "eq"),
    "dep.rho": (0.05, "eq"),
    "dep.lr": (1e-5, "eq"),
    "contrast.max_slots": (8, "eq"),
    "contrast.weighting": ("reference", "eq"),
    "train.epochs": (5, "eq"),
    "train.effective_batch": (16, "eq"),
    "train.weight_decay": (0.025, "eq"),
    "train.warmup_ratio": (0.01, "eq"),
    "train.samples_per_user": (1, "eq"),
    "train.select_by": ("meteor", "eq"),
    "train.val_do_sample": (True, "eq"),
    "train.val_temperature": (0.8, "eq"),
    "train.val_top_p": (0.95, "eq"),
    "train.val_max_new_tokens": (512, "min"),
}
# sections a run reads only through its DEP-family methods
_DEP_SECTIONS = ("dep", "contrast", "train")


def _get(cfg: RunConfig, key: str) -> Any:
    if key == "train.effective_batch":  # the DEP code: 1 per device, 16 accumulated
        return cfg.train.batch_size * cfg.train.grad_accum
    if key == "dep.lr":  # the rate DEP trains with (train.lr when dep.lr is unset)
        return cfg.dep.lr or cfg.train.lr
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def deviations(cfg: RunConfig) -> list[str]:
    """Every setting of ``cfg`` that differs from the published profile, as a sentence.

    Only sections some method of the run reads count (``pipeline.*`` in a run without PAG,
    DPL or DRP changes nothing; ``dep.*``, ``contrast.*`` and ``train.*`` count with a DEP
    method); ``generate.*`` always does.
    """
    from peerdiff import methods

    read = {"generate"}
    for name in cfg.methods:
        read.update(methods.get(name).settings(cfg))
        if name.startswith("dep"):
            read.update(_DEP_SECTIONS)
    unread = set()
    if cfg.dep.layout == "tokens":  # settings of the text layout reach no prompt
        unread = {
            "dep.text_reviews",
            "dep.compact",
            "dep.max_review_chars",
            "dep.max_prompt_tokens",
        }
    if cfg.train.select_by != "meteor":  # validation decoding is then never used
        unread |= {
            f"train.val_{k}" for k in ("do_sample", "temperature", "top_p", "max_new_tokens")
        }
    out = []
    for key, (want, how) in PAPER.items():
        if key.split(".")[0] not in read or key in unread:
            continue
        got = _get(cfg, key)
        if (how == "eq" and got != want) or (how == "min" and got < want):
            rel = "" if how == "eq" else ">= "
            out.append(f"{key} = {got!r} (published: {rel}{want!r})")
    return out


class DryCall:
    """A stand-in for the role-routed calls: records prompts, answers with a placeholder as
    long as the call's budget, and never touches a model."""

    def __init__(self, backends) -> None:
        self.backends = backends
        self.steps: dict[str, dict[str, Any]] = {}

    def __call__(self, step, role, ids, conversations, max_new_tokens):
        budget = self.backends.budget(role, max_new_tokens)
        self.steps[step] = {"role": role, "budget": budget, "prompts": list(conversations)}
        return [f"<{step} output of up to {max_new_tokens} tokens>"] * len(ids)


def on_disk(name: str) -> bool:
    """Whether a model (an id or a folder) is on this machine: a folder, or its
    ``config.json`` in the Hugging Face cache. Never calls the hub."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    if Path(os.path.expanduser(name)).exists():
        return True
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except HFValidationError:  # not a repo id either
        return False


def _llm_on_disk(name: str) -> bool:
    from peerdiff.config.sections import DEFAULT_LLM_ALIASES

    return name in DEFAULT_LLM_ALIASES or name.endswith(".gguf") or on_disk(name)


def missing_inputs(cfg: RunConfig, names: Sequence[str] | None = None) -> dict[str, str]:
    """What a run of ``names`` (default: ``cfg.methods``) needs that is not on this machine,
    as ``{input: what to do}`` with inputs ``data``, ``llm``, ``encoder``, ``bertscore``.

    Looks at local files and the Hugging Face cache only (servers of ``openai`` backends are
    not contacted).
    """
    from peerdiff import methods
    from peerdiff.config.data import Source
    from peerdiff.data.readers import require_input
    from peerdiff.embed import DEFAULT_ENCODER_ALIASES
    from peerdiff.errors import DataError

    names = list(names or cfg.methods)
    d, out = cfg.data, {}
    try:
        if d.source == Source.dpl and d.reviews.startswith("hub:"):
            raise DataError(
                f"data.reviews={d.reviews} is read from the Hugging Face Hub; save it once with "
                "datasets' save_to_disk and set data.reviews to that folder"
            )
        require_input(d.path(d.reviews), "reviews", d)
        if d.items and not (d.source == Source.dpl and d.items.startswith("hub:")):
            require_input(d.path(d.items), "items", d)
        if d.source == Source.dpl:
            import importlib.util

            if importlib.util.find_spec("datasets") is None:
                raise DataError("reading DPL-main needs `pip install peerdiff[dpl]`")
    except DataError as e:
        out["data"] = str(e)
    hint = "not a local folder and not in the Hugging Face cache; where the hub is reachable: "
    models = {cfg.llm.model}  # the in-process model and every other hf backend of the run
    models |= {b.model for b in cfg.backends.values() if b.type == "hf" and b.model}
    absent = sorted(m for m in models if not _llm_on_disk(m))
    if absent:
        out["llm"] = "; ".join(f"{m}: {hint}hf download {m}" for m in absent)
    needs = set().union(*(methods.get(m).needs for m in names))
    enc = cfg.embed.model
    if needs & {"vectors", "contrast"} and enc not in DEFAULT_ENCODER_ALIASES and not on_disk(enc):
        out["encoder"] = f"embed.model={enc}: {hint}hf download {enc}"
    bs = cfg.evaluate.bertscore_model
    if cfg.evaluate.bertscore and bs not in DEFAULT_ENCODER_ALIASES and not on_disk(bs):
        out["bertscore"] = (
            f"evaluate.bertscore_model={bs} (needed by evaluate, not by the dry run): "
            f"{hint}hf download {bs}"
        )
    return out


def dry_run(cfg: RunConfig, names: Sequence[str] | None = None, n: int = 8) -> dict[str, Any]:
    """Prompt lengths and budgets of each method on the first ``n`` test samples (soft-prompt
    methods too: their prompt text needs no adapter). Nothing is downloaded: a method whose
    inputs are missing (:func:`missing_inputs`) is listed under ``skipped`` instead.

    Returns:
        ``{"tokenizer": ..., "deviations": [...], "missing": {input: why}, "skipped":
        {method: why}, "methods": {name: {step: {...}}}}``; per step: prompts, token lengths
        (min/median/max), how many exceed ``prompt.max_prompt_tokens``, and the role's
        budget of new tokens.
    """
    from peerdiff import methods, stages
    from peerdiff.backends import Backends

    names = list(names or cfg.methods)
    missing = missing_inputs(cfg, names)
    counter, tok_name, tok = _counter(cfg)
    out: dict[str, Any] = {
        "tokenizer": tok_name,
        "deviations": deviations(cfg),
        "missing": missing,
        "skipped": {},
        "methods": {},
    }
    for name in names:
        if "data" in missing:
            out["skipped"][name] = "no data"
        elif "encoder" in missing and methods.get(name).needs & {"vectors", "contrast"}:
            out["skipped"][name] = "no encoder"
    names = [m for m in names if m not in out["skipped"]]
    if not names:
        return out
    data = stages.data(cfg, names)
    backends = Backends(cfg)
    items = data.bench.samples("test")[:n]
    for name in names:
        spec = methods.get(name)
        m = spec.build(cfg)
        if spec.soft and tok is not None:  # each placeholder counts as the one token it is
            from peerdiff.model.inject import add_placeholders

            add_placeholders(tok, m.placeholders())
        call = DryCall(backends) if len(spec.roles) > 1 else None
        ctx = data.context(cfg, spec.needs, counter)
        P = m.prompts(items, ctx, call)
        steps = dict(call.steps) if call else {}
        steps["generate"] = {
            "role": "generator",
            "budget": backends.budget("generator", cfg.generate.max_new_tokens),
            "prompts": P.conversations,
        }
        limit = cfg.prompt.max_prompt_tokens
        if name.startswith("dep") and cfg.dep.layout == "text" and cfg.dep.max_prompt_tokens:
            limit = cfg.dep.max_prompt_tokens
        out["methods"][name] = {step: _lengths(v, counter, limit) for step, v in steps.items()}
    return out


def _lengths(step: dict, counter, limit: int) -> dict[str, Any]:
    lens = np.array(
        [counter("".join(m["content"] for m in conv)) for conv in step["prompts"]], dtype=int
    )
    return {
        "role": step["role"],
        "prompts": len(lens),
        "tokens_min": int(lens.min()) if len(lens) else 0,
        "tokens_median": float(np.median(lens)) if len(lens) else 0.0,
        "tokens_max": int(lens.max()) if len(lens) else 0,
        "over_budget": int((lens > limit).sum()),
        "limit": limit,
        "max_new_tokens": step["budget"],
    }


def _counter(cfg: RunConfig):
    """``(count, name, tokenizer)``: the LLM's tokenizer when it is available offline, else
    ~4 characters per token (tokenizer ``None``)."""
    from peerdiff.methods.prompts import approx_tokens

    if not _llm_on_disk(cfg.llm.model):
        return approx_tokens, "approximate (4 characters per token; no local tokenizer)", None
    try:
        from peerdiff.model.llm import load_tokenizer, resolve_llm

        tok = load_tokenizer(resolve_llm(cfg.llm.model, cfg.cache_dir))
    except Exception as e:  # any failure to load means: estimate
        why = f"approximate (4 characters per token; {type(e).__name__})"
        return approx_tokens, why, None
    return (lambda t: len(tok(t, add_special_tokens=False)["input_ids"])), cfg.llm.model, tok
