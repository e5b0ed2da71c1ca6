"""Soft-prompt methods: DEP (and its ablations), PPlug, and the learned-constant control.

Each method is a prompt layout with placeholder tokens plus the per-sample features its
adapter turns into soft tokens:

- ``dep*``: DEP's prompt. Slot ``k`` (the user's k-th newest past review with a peer) shows
  that review's item title, rating and review title, its text for the first
  ``dep.text_reviews`` slots, then ``[HIS_TOKEN_k]`` and ``[DIFF_TOKEN_k]``, whose vectors
  are that same review's history and difference vectors (the DEP code mixed these up).
  Ablations drop one token kind or the SAE.
- ``pplug``: the Non-Perso prompt plus one persona token built from the user's history.
- ``constant``: the Non-Perso prompt plus as many learned soft tokens as DEP uses, with no
  user information.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from peerdiff.backends.base import Message
from peerdiff.config import SOFT_METHODS, RunConfig
from peerdiff.contrast import ContrastData
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Context
from peerdiff.model.adapters import AdapterConfig
from peerdiff.model.inject import placeholder_names

DEP_NOTE_COMPACT = (
    "Each past review line ends with two soft prompts: one encodes the review, the other how "
    "it differs from other users' reviews of the same item."
)
DEP_NOTE = (
    "Note: [Review Embedding] is a soft prompt of the review text and [Review Difference "
    "Embedding] is a soft prompt of how the review differs from other users' reviews of the "
    "same item; use them as hints for the personalized review."
)


@dataclass
class SoftContext(Context):
    """Adds the features soft-prompt methods read: contrast slots and input vectors."""

    contrast: ContrastData | None = None
    inputs: dict[str, np.ndarray] | None = None  # sample_id -> input (query) vector


class SoftPromptMethod:
    """A soft-prompt method: its adapter configuration, prompt layout and features."""

    def __init__(self, name: str, cfg: RunConfig) -> None:
        if name not in SOFT_METHODS:
            raise ValueError(f"{name!r} is not a soft-prompt method ({sorted(SOFT_METHODS)})")
        self.name = name
        self.soft = cfg.dep
        self.slots = cfg.contrast.max_slots
        self.spec = SOFT_METHODS[name]
        self.base_model = cfg.llm.model
        self.rho = cfg.train.rho

    def adapter_config(self, encoder_dim: int, llm_hidden: int) -> AdapterConfig:
        n_dep = self.slots * 2
        return AdapterConfig(
            encoder_dim=encoder_dim,
            llm_hidden=llm_hidden,
            slots=self.slots,
            sae_hidden=self.soft.sae_hidden,
            rho=self.rho,
            n_constant=n_dep,
            base_model=self.base_model,
            **self.spec,
        )

    @property
    def config(self) -> AdapterConfig:
        """Shape-free view of the adapter settings (sizes filled in by the trainer)."""
        return self.adapter_config(1, 1)

    def placeholders(self) -> list[str]:
        c = self.config
        per = c.slots if c.kind == "dep" else c.n_tokens
        return placeholder_names(c.groups, per)

    # ------------------------------------------------------------------ prompts
    def conversation(self, sample: Sample, ctx: SoftContext) -> list[Message]:
        c = self.config
        if c.kind == "dep":
            return self._dep_conversation(sample, ctx, c)
        bench, pc = ctx.bench, ctx.prompt
        target = bench.review(sample.target)
        names = self.placeholders()
        label = "[User Persona]" if c.kind == "pplug" else "[Style]"
        user = (
            prompts.item_fields(bench, target, pc)
            + f"{label}: {''.join(names)}\n"
            + prompts.output_fields(target)
            + "\n"
            + prompts.CLOSING
        )
        return prompts.conversation(prompts.system_prompt(), user)

    def _dep_conversation(
        self, sample: Sample, ctx: SoftContext, c: AdapterConfig
    ) -> list[Message]:
        assert ctx.contrast is not None, "DEP needs the contrast stage"
        bench = ctx.bench
        pc = replace(ctx.prompt, max_review_chars=self.soft.max_review_chars)
        target = bench.review(sample.target)
        slots, _, _, mask = ctx.contrast.for_sample(sample.sample_id)
        blocks = []
        for k in np.flatnonzero(mask):
            r = bench.review(int(slots[k]))
            tokens = ""
            if c.use_history:
                tokens += (
                    f"[HIS_TOKEN_{k}]"
                    if self.soft.compact
                    else (f"  - [Review Embedding]: [HIS_TOKEN_{k}]\n")
                )
            if c.use_difference:
                tokens += (
                    f"[DIFF_TOKEN_{k}]"
                    if self.soft.compact
                    else (f"  - [Review Difference Embedding]: [DIFF_TOKEN_{k}]\n")
                )
            if self.soft.compact:
                text = (
                    f" {prompts.clip(r.text, pc.max_review_chars)}"
                    if k < self.soft.text_reviews
                    else ""
                )
                item = bench.item(r.item_id).title
                blocks.append(f"- {item} ({r.rating:g}) {r.title}:{text} {tokens}\n")
            elif k < self.soft.text_reviews:
                blocks.append(prompts.past_review(bench, k + 1, r, pc, extra=tokens))
            else:
                item = bench.item(r.item_id)
                blocks.append(
                    f"- [Review {k + 1}]:\n  - [Item Title]: {item.title}\n"
                    f"  - [Review Rating]: {r.rating:g}\n  - [Review Title]: {r.title}\n{tokens}"
                )
        user = (
            prompts.item_fields(bench, target, ctx.prompt)
            + "[User's Past Reviews]:\n"
            + "".join(blocks)
            + prompts.output_fields(target)
            + "\n"
            + prompts.CLOSING
        )
        if self.soft.compact:
            system = prompts.system_prompt(", along with the user's past reviews")
            return prompts.conversation(system + "\n" + DEP_NOTE_COMPACT, user)
        system = prompts.system_prompt(
            ", along with the user's past reviews (with their review embeddings and review "
            "difference embeddings)"
        )
        return prompts.conversation(system + "\n" + DEP_NOTE, user)

    # ------------------------------------------------------------------ features
    def features(self, samples: list[Sample], ctx: SoftContext) -> dict[str, np.ndarray]:
        """Stacked adapter inputs for ``samples`` (float32 / bool arrays)."""
        c = self.config
        n = len(samples)
        if c.kind == "dep":
            assert ctx.contrast is not None
            out = [ctx.contrast.for_sample(s.sample_id) for s in samples]
            return {
                "hist": np.stack([o[1] for o in out]) if n else np.zeros((0, self.slots, 1)),
                "diff": np.stack([o[2] for o in out]) if n else np.zeros((0, self.slots, 1)),
                "mask": np.stack([o[3] for o in out]) if n else np.zeros((0, self.slots), bool),
            }
        if c.kind == "pplug":
            assert ctx.contrast is not None and ctx.inputs is not None
            N = self.soft.pplug_history
            vec = ctx.contrast.vectors
            hist = np.zeros((n, N, vec.shape[1]), dtype=np.float32)
            mask = np.zeros((n, N), dtype=bool)
            for i, s in enumerate(samples):
                recent = list(s.profile[-N:])[::-1]  # newest first
                hist[i, : len(recent)] = vec[recent]
                mask[i, : len(recent)] = True
            query = np.stack([ctx.inputs[s.sample_id] for s in samples]).astype(np.float32)
            return {"hist": hist, "mask": mask, "query": query}
        return {"mask": np.ones((n, 1), dtype=bool)}
