"""The learned-constant control: soft tokens with no user information.

Same prompt as DEP's ``tokens`` layout (the Non-Perso prompt plus one ``[User Style]:``
line of as many tokens as DEP uses), so that the two differ only in where the soft vectors
come from. It separates "learned review style" from "learned this user".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from peerdiff.backends.base import Message
from peerdiff.data.schema import Sample
from peerdiff.methods.base import Context
from peerdiff.methods.soft import STYLE_LABEL, SoftMethod, token_line_conversation


class Constant(SoftMethod):
    kind = "constant"
    lr_section = "constant"
    tokens_setting = "constant.tokens"

    def adapter_settings(self) -> dict:
        return {"n_constant": self.cfg.constant.tokens or 2 * self.slots}

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]:
        return token_line_conversation(sample, ctx, STYLE_LABEL, self.placeholders())

    def features(self, samples: Sequence[Sample], ctx: Context) -> dict:
        return {"mask": np.ones((len(samples), 1), dtype=bool)}
