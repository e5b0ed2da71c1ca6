"""PPlug: one persona soft token from an input-aware attention over the user's history.

The query is the sample's input vector (target item and given review title, never the
target text); the history is the user's newest ``pplug.history`` profile review vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from peerdiff.backends.base import Message
from peerdiff.data.schema import Sample
from peerdiff.methods.base import Context
from peerdiff.methods.soft import SoftMethod, token_line_conversation


class PPlug(SoftMethod):
    kind = "pplug"
    lr_section = "pplug"

    def adapter_settings(self) -> dict:
        return {"init": self.cfg.pplug.init}

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]:
        return token_line_conversation(sample, ctx, "[User Persona]", self.placeholders())

    def features(self, samples: Sequence[Sample], ctx: Context) -> dict:
        assert ctx.vectors is not None and ctx.inputs is not None, "PPlug needs the embed stage"
        n, N = len(samples), self.cfg.pplug.history
        vec = ctx.vectors
        hist = np.zeros((n, N, vec.shape[1]), dtype=np.float32)
        mask = np.zeros((n, N), dtype=bool)
        for i, s in enumerate(samples):
            recent = list(s.profile[-N:])[::-1]  # newest first
            hist[i, : len(recent)] = vec[recent]
            mask[i, : len(recent)] = True
        query = np.stack([ctx.inputs[s.sample_id] for s in samples]).astype(np.float32)
        return {"hist": hist, "mask": mask, "query": query}
