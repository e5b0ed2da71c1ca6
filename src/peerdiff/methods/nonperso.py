"""Non-personalized baseline: the item and the output rating/title, nothing about the user."""

from __future__ import annotations

from collections.abc import Sequence

from peerdiff.backends.base import Message
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Call, Context, Prompts


def nonperso_conversation(sample: Sample, ctx: Context) -> list[Message]:
    target = ctx.bench.review(sample.target)
    user = (
        prompts.item_fields(ctx.bench, target, ctx.prompt)
        + prompts.output_fields(target)
        + prompts.closing(ctx.prompt)
    )
    return prompts.conversation(prompts.system_prompt(pc=ctx.prompt), user)


class NonPerso:
    name = "nonperso"

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        return Prompts([nonperso_conversation(s, ctx) for s in samples])
