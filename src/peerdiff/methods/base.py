"""What a method is: samples in, the generator's prompts (and soft-token features) out.

Every method implements :class:`Method`: ``prompts(samples, ctx, call) -> Prompts``. One-call
methods (Non-Perso, RAG) ignore ``call``; multi-call methods (PAG, DPL, DRP) make their
intermediate LLM calls through it; soft-prompt methods (DEP, PPlug, the constant) also
return the per-sample features their adapter turns into soft tokens. Side results (how many
items were compared, features per user...) come back as ``Prompts.stats``, never as
attributes set on the method.

:class:`Spec` says what a method needs, so the stages, the report and the service dispatch
on it instead of on name lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from peerdiff.backends.base import Message
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Sample

if TYPE_CHECKING:  # config imports the method registry, not the other way round
    from peerdiff.config import PromptConfig, RunConfig

# (step name, role, ids, conversations, max_new_tokens) -> raw outputs, cached per id
Call = Callable[[str, str, Sequence[str], Sequence[list[Message]], int], list[str]]


@dataclass
class Context:
    """What a method may read: the benchmark, prompt limits, a token counter and, for methods
    that need them, the embed stage's review vectors and input vectors and the contrast
    stage's slots."""

    bench: Benchmark
    prompt: PromptConfig
    count_tokens: Callable[[str], int]
    vectors: np.ndarray | None = None  # (n_reviews, dim), NaN rows never embedded
    inputs: dict[str, np.ndarray] | None = None  # sample_id -> input (query) vector
    contrast: Any = None  # peerdiff.contrast.ContrastData


@dataclass
class Prompts:
    """A method's output for a list of samples (aligned with them)."""

    conversations: list[list[Message]]
    features: dict[str, np.ndarray] | None = None  # soft-prompt methods: adapter inputs
    stats: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    name: str

    def prompts(
        self, samples: Sequence[Sample], ctx: Context, call: Call | None = None
    ) -> Prompts: ...


@dataclass(frozen=True)
class Spec:
    """A registered method.

    Attributes:
        needs: ``vectors`` (embed stage), ``contrast`` (contrast stage), ``adapter`` (a
            trained adapter), ``known_user`` (a user of the prepared benchmark: the method
            compares them with other users).
        roles: LLM roles it calls (``generator`` always; ``extractor``, ``validator``,
            ``summarizer`` for multi-call methods).
        build: config -> the method.
        settings: config -> exactly the settings its prompts read (part of stage keys).
        group: ``baseline``, ``control`` (no user information by design) or ``dep``.
        user_features: its adapter reads per-user features (the swap probe applies; not
            ``dep-mean``, whose adapter reads the training means).
        summary: one line for tables and the README.
    """

    name: str
    build: Callable[[RunConfig], Any]
    settings: Callable[[RunConfig], dict[str, Any]]
    needs: frozenset[str] = frozenset()
    roles: tuple[str, ...] = ("generator",)
    group: str = "baseline"
    user_features: bool = False
    summary: str = ""

    @property
    def soft(self) -> bool:
        return "adapter" in self.needs
