"""Non-personalized baseline: the item and the output rating/title, nothing about the user."""

from __future__ import annotations

from peerdiff.backends.base import Message
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Context


class NonPerso:
    name = "nonperso"

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]:
        target = ctx.bench.review(sample.target)
        user = (
            prompts.item_fields(ctx.bench, target, ctx.prompt)
            + prompts.output_fields(target)
            + "\n"
            + prompts.CLOSING
        )
        return prompts.conversation(prompts.system_prompt(), user)
