"""What a method is: something that turns a sample into the generator's conversation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from peerdiff.backends.base import Message
from peerdiff.config import PromptConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Sample


@dataclass
class Context:
    """What every method may read: the benchmark, prompt limits, a token counter and,
    for methods that compare users, the review vectors of the embed stage."""

    bench: Benchmark
    prompt: PromptConfig
    count_tokens: Callable[[str], int]
    vectors: np.ndarray | None = None


class PromptMethod(Protocol):
    """A method whose generator call is one conversation per sample."""

    name: str

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]: ...
