"""DEP, its ablations (``dep-nodiff``, ``dep-nohist``, ``dep-nosae``) and ``dep-mean``.

Slot ``k`` is the user's k-th newest past review that has a peer; its history vector (the
review's own) and difference vector (against other users' reviews of the same item) become
``[HIS_TOKEN_k]`` and ``[DIFF_TOKEN_k]``. Layouts (``dep.layout``):

- ``text``: DEP's prompt. Each slot's block shows the review's item title, rating and review
  title, its text for the first ``dep.text_reviews`` slots, then its two tokens (slot k's
  text and slot k's vectors are the same review; the DEP code mixed these up).
  ``dep.compact`` puts each slot on one short line (CPU). As in the DEP code, the oldest
  slots are dropped until the prompt fits ``dep.max_prompt_tokens`` (their features are
  masked too); texts are clipped only by ``dep.max_review_chars``.
- ``tokens``: the Non-Perso prompt plus one ``[User Style]:`` line holding every slot's
  tokens (empty slots too) -- the constant control's prompt, word for word, so the two
  differ only in the user information.

``dep-mean`` feeds every filled slot the training-set mean vectors (the adapter holds them):
DEP's prompt, adapter and budget with no user information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from peerdiff.backends.base import Message
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Call, Context, Prompts
from peerdiff.methods.soft import STYLE_LABEL, SoftMethod, token_line_conversation
from peerdiff.model.inject import placeholder

NOTE_COMPACT = (
    "Each past review line ends with two soft prompts: one encodes the review, the other how "
    "it differs from other users' reviews of the same item."
)
NOTE = (
    "Note: [Review Embedding] is a soft prompt of the review text and [Review Difference "
    "Embedding] is a soft prompt of how the review differs from other users' reviews of the "
    "same item; use them as hints for the personalized review."
)
# prompt.style "reference": the DEP code's system prompt, word for word (it has no output-
# format line: the assistant turn starts right after the output rating and title)
REFERENCE_SYSTEM = (
    "Given the title and description of an item, along with the user's past reviews "
    "(including item title, item description, review rating, review title, review text, "
    "review embedding, review difference embedding), and the output review rating and review "
    "title, generate a personalized item review for the user.\n"
    "Note: [Review Embedding] denotes a soft prompt of the review text and [Review Difference "
    "Embedding] denotes a soft prompt showing the difference between the review text and "
    "other reviews on the same item. [Review Embedding] and [Review Difference Embedding] "
    "should serve as hints for personalized review text generation.\n"
)


class DEP(SoftMethod):
    kind = "dep"
    lr_section = "dep"
    tokens_setting = "contrast.max_slots"

    def adapter_settings(self) -> dict:
        d = self.cfg.dep
        return {
            "slots": self.slots,
            "sae_hidden": d.sae_hidden,
            "rho": d.rho,
            "init": d.init,
            "features": d.features,
            "residual": d.residual,
            "feature_dropout": d.feature_dropout,
            "dropout_unit": d.dropout_unit,
            "branch_rank": d.branch_rank,
            "pool_slots": d.pool_slots,
        }

    def group_settings(self) -> dict[str, dict]:
        d = self.cfg.dep
        return {"branch": {"lr": d.branch_lr, "weight_decay": d.branch_weight_decay}}

    def loss_weights(self) -> dict[str, float]:
        return {"recon_weight": self.cfg.dep.recon_weight, "kl_weight": self.cfg.dep.kl_weight}

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        """Conversations and features; in the text layout, slots dropped to fit the token
        budget are masked in the features too (the prompt has no placeholder for them)."""
        feats = self.features(samples, ctx)
        if self.cfg.dep.layout == "tokens":
            return Prompts([self.conversation(s, ctx) for s in samples], features=feats)
        c = self.adapter_config()
        convs = []
        for i, s in enumerate(samples):
            conv, kept = self._text_conversation(s, ctx, c.use_history, c.use_difference)
            feats["mask"][i, np.flatnonzero(feats["mask"][i])[kept:]] = False
            convs.append(conv)
        return Prompts(convs, features=feats)

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]:
        c = self.adapter_config()
        if self.cfg.dep.layout == "tokens":
            names = [placeholder(g, k) for k in range(c.slots) for g in c.groups]
            return token_line_conversation(sample, ctx, STYLE_LABEL, names)
        return self._text_conversation(sample, ctx, c.use_history, c.use_difference)[0]

    def _text_conversation(
        self, sample: Sample, ctx: Context, use_history: bool, use_difference: bool
    ) -> tuple[list[Message], int]:
        """The text layout's conversation and how many slots (newest first) it shows."""
        assert ctx.contrast is not None, "DEP needs the contrast stage"
        bench, d = ctx.bench, self.cfg.dep
        pc = replace(ctx.prompt, max_review_chars=d.max_review_chars)
        target = bench.review(sample.target)
        slots, _, _, mask = ctx.contrast.for_sample(sample.sample_id)
        blocks = []
        for k in np.flatnonzero(mask):
            r = bench.review(int(slots[k]))
            tokens = ""
            if use_history:
                htok = placeholder("hist", k)
                tokens += htok if d.compact else f"  - [Review Embedding]: {htok}\n"
            if use_difference:
                dtok = placeholder("diff", k)
                tokens += dtok if d.compact else f"  - [Review Difference Embedding]: {dtok}\n"
            if d.compact:
                text = f" {prompts.clip(r.text, pc.max_review_chars)}" if k < d.text_reviews else ""
                item = bench.item(r.item_id).title
                blocks.append(f"- {item} ({r.rating:g}) {r.title}:{text} {tokens}\n")
            elif k < d.text_reviews:
                blocks.append(prompts.past_review(bench, k + 1, r, pc, extra=tokens))
            else:
                item = bench.item(r.item_id)
                blocks.append(
                    f"- [Review {k + 1}]:\n  - [Item Title]: {item.title}\n"
                    f"  - [Review Rating]: {r.rating:g}\n  - [Review Title]: {r.title}\n{tokens}"
                )
        if d.compact:
            system = prompts.system_prompt(", along with the user's past reviews", ctx.prompt)
            system += "\n" + NOTE_COMPACT
        elif ctx.prompt.style == "reference":
            system = REFERENCE_SYSTEM
        else:
            system = prompts.system_prompt(
                ", along with the user's past reviews (with their review embeddings and review "
                "difference embeddings)",
                ctx.prompt,
            )
            system += "\n" + NOTE
        head = prompts.item_fields(bench, target, ctx.prompt) + "[User's Past Reviews]:\n"
        tail = prompts.output_fields(target) + prompts.closing(ctx.prompt)
        # blocks are newest first: keeping the longest prefix that fits drops the oldest
        budget = d.max_prompt_tokens or ctx.prompt.max_prompt_tokens
        kept = prompts.fit_blocks(system + head, blocks, tail, budget, ctx.count_tokens)
        return prompts.conversation(system, head + "".join(kept) + tail), len(kept)

    def features(self, samples: Sequence[Sample], ctx: Context) -> dict:
        """``hist``, ``diff``: ``(n, slots, dim)`` float32 (zeros in empty slots); ``mask``."""
        assert ctx.contrast is not None, "DEP needs the contrast stage"
        n, K, dim = len(samples), self.slots, ctx.contrast.dim
        hist = np.zeros((n, K, dim), dtype=np.float32)
        diff = np.zeros((n, K, dim), dtype=np.float32)
        mask = np.zeros((n, K), dtype=bool)
        for i, s in enumerate(samples):
            _, hist[i], diff[i], mask[i] = ctx.contrast.for_sample(s.sample_id)
        return {"hist": hist, "diff": diff, "mask": mask}
