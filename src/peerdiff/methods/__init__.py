"""The method registry: every method by name, with what it needs (:class:`Spec`).

Stages, the report and the service dispatch through :func:`get`; nothing else keeps lists
of method names. Builders import their module on first use, so validating a config does not
load torch.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from peerdiff.errors import ConfigError, did_you_mean
from peerdiff.methods.base import Call, Context, Method, Prompts, Spec

if TYPE_CHECKING:  # config imports the method registry, not the other way round
    from peerdiff.config import RunConfig

__all__ = ["Call", "Context", "Method", "Prompts", "Spec", "build", "get", "names"]

LLM_ROLES = ("extractor", "validator", "summarizer", "generator")


def _nonperso(cfg: RunConfig):
    from peerdiff.methods.nonperso import NonPerso

    return NonPerso()


def _rag(cfg: RunConfig):
    from peerdiff.methods.rag import RAG

    return RAG(k=cfg.rag.k, tokenizer=cfg.rag.tokenizer)


def _class(path: str):
    """``module:Class`` imported on first use."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _pipeline(path: str):
    def build(cfg: RunConfig):
        return _class(path)(cfg.pipeline, cfg.rag.tokenizer)

    return build


def _soft(name: str, path: str, **flags: Any):
    def build(cfg: RunConfig):
        return _class(path)(name, cfg, **flags)

    return build


def _prompt(cfg: RunConfig) -> dict[str, Any]:
    return {"prompt": asdict(cfg.prompt)}


# what the Non-Perso prompt (and the token line of the soft methods on top of it) reads
_ITEM_PROMPT = ("max_desc_chars", "style")


def _item_prompt(cfg: RunConfig) -> dict[str, Any]:
    """The prompt settings of a method whose prompt is the Non-Perso one (+ a token line):
    a setting it never reads (past reviews' length, the token budget) keeps its key."""
    return {"prompt": {k: getattr(cfg.prompt, k) for k in _ITEM_PROMPT}}


def _section(cfg: RunConfig, name: str) -> dict[str, Any]:
    """A soft method's section without ``lr``: the train key holds the effective rate."""
    d = asdict(getattr(cfg, name))
    d.pop("lr")
    return d


# settings added after runs were made: at their defaults they leave those runs' keys as they were
_DEP_LATER = {
    "branch_rank": None,
    "pool_slots": False,
    "branch_lr": None,
    "branch_weight_decay": None,
}


def _dep_settings(cfg: RunConfig) -> dict[str, Any]:
    d = _section(cfg, "dep")
    for k, default in _DEP_LATER.items():
        if d[k] == default:
            d.pop(k)
    if d["layout"] == "tokens":  # text-layout settings do not reach the prompt
        for k in ("text_reviews", "max_review_chars", "compact", "max_prompt_tokens"):
            d.pop(k)
        return {**_item_prompt(cfg), "dep": d, "slots": cfg.contrast.max_slots}
    prompt = _prompt(cfg)
    prompt["prompt"].pop("max_review_chars")  # the text layout clips by dep.max_review_chars
    return {**prompt, "dep": d, "slots": cfg.contrast.max_slots}


def _pipeline_settings(cfg: RunConfig) -> dict[str, Any]:
    return {**_prompt(cfg), "rag": asdict(cfg.rag), "pipeline": asdict(cfg.pipeline)}


_REGISTRY: dict[str, Spec] = {}


def _register(spec: Spec) -> None:
    _REGISTRY[spec.name] = spec


_register(Spec("nonperso", _nonperso, _item_prompt, summary="the item, rating and title only"))
_register(
    Spec(
        "rag",
        _rag,
        lambda c: {**_prompt(c), "rag": asdict(c.rag)},
        summary="+ BM25-retrieved past reviews",
    )
)
_register(
    Spec(
        "pag",
        _pipeline("peerdiff.methods.pag:PAG"),
        _pipeline_settings,
        roles=("summarizer", "generator"),
        summary="+ a profile summary of retrieved past reviews",
    )
)
_register(
    Spec(
        "dpl",
        _pipeline("peerdiff.methods.dpl:DPL"),
        _pipeline_settings,
        needs=frozenset({"vectors", "known_user"}),
        roles=("extractor", "summarizer", "generator"),
        summary="+ a profile of differences from representative peers",
    )
)
_register(
    Spec(
        "drp",
        _pipeline("peerdiff.methods.drp:DRP"),
        _pipeline_settings,
        needs=frozenset({"vectors", "known_user"}),
        roles=("extractor", "validator", "summarizer", "generator"),
        summary="DPL with open style dimensions and a reflective validation",
    )
)
_DEP_NEEDS = frozenset({"vectors", "contrast", "adapter", "known_user"})
for _name, _flags, _summary in (
    ("dep", {}, "history + difference vectors -> SAE -> MLPs -> soft tokens"),
    ("dep-nodiff", {"use_difference": False}, "DEP without difference tokens"),
    ("dep-nohist", {"use_history": False}, "DEP without history tokens"),
    ("dep-nosae", {"use_sae": False}, "DEP without the SAE"),
    ("dep-mean", {"mean_features": True}, "control: DEP fed the training-mean vectors"),
):
    _group = "control" if _name == "dep-mean" else "dep"
    _register(
        Spec(
            _name,
            _soft(_name, "peerdiff.methods.dep:DEP", **_flags),
            _dep_settings,
            _DEP_NEEDS,
            group=_group,
            user_features=_name != "dep-mean",
            summary=_summary,
        )
    )
_register(
    Spec(
        "pplug",
        _soft("pplug", "peerdiff.methods.pplug:PPlug"),
        lambda c: {**_item_prompt(c), "pplug": _section(c, "pplug")},
        frozenset({"vectors", "adapter", "known_user"}),
        user_features=True,
        summary="one persona token from attention over history vectors",
    )
)
_register(
    Spec(
        "constant",
        _soft("constant", "peerdiff.methods.constant:Constant"),
        lambda c: {
            **_item_prompt(c),
            "constant": _section(c, "constant"),
            "tokens": c.constant.tokens or 2 * c.contrast.max_slots,
        },
        frozenset({"adapter"}),
        group="control",
        summary="control: learned soft tokens with no user information",
    )
)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Spec:
    """The spec of method ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones and the closest).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}{did_you_mean(name, _REGISTRY)}; known: {list(_REGISTRY)}"
        ) from None


def build(name: str, cfg: RunConfig) -> Method:
    """The method called ``name``, configured from ``cfg``."""
    return get(name).build(cfg)
