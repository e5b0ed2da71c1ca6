"""Methods by name."""

from __future__ import annotations

from peerdiff.config import RunConfig
from peerdiff.methods.base import Context, PromptMethod
from peerdiff.methods.nonperso import NonPerso
from peerdiff.methods.rag import RAG

__all__ = ["Context", "PromptMethod", "get_method"]


def get_method(name: str, cfg: RunConfig) -> PromptMethod:
    """The method called ``name``, configured from ``cfg``."""
    if name == "nonperso":
        return NonPerso()
    if name == "rag":
        return RAG(k=cfg.rag.k)
    raise ValueError(f"unknown method {name!r}")
