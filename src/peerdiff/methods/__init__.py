"""Methods by name."""

from __future__ import annotations

from peerdiff.config import RunConfig
from peerdiff.methods.base import Context, PromptMethod
from peerdiff.methods.nonperso import NonPerso
from peerdiff.methods.pipelines import DPL, DRP, PAG
from peerdiff.methods.rag import RAG

__all__ = ["Context", "PromptMethod", "get_method"]


def get_method(name: str, cfg: RunConfig):
    """The prompt-based method called ``name`` (one-call or multi-call), configured from ``cfg``."""
    if name == "nonperso":
        return NonPerso()
    if name == "rag":
        return RAG(k=cfg.rag.k)
    if name == "pag":
        return PAG(cfg.pipeline)
    if name == "dpl":
        return DPL(cfg.pipeline)
    if name == "drp":
        return DRP(cfg.pipeline)
    raise ValueError(f"unknown method {name!r}")
