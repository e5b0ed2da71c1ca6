"""What the soft-prompt methods (DEP and its variants, PPlug, the constant control) share.

A soft-prompt method is a prompt layout with placeholder tokens plus per-sample features; its
adapter (:mod:`peerdiff.model.adapters`) turns the features into the vectors placed at the
placeholders. Each method knows its adapter configuration, learning rate and loss weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from peerdiff.backends.base import Message
from peerdiff.config import RunConfig
from peerdiff.config.sections import llm_identity
from peerdiff.data.schema import Sample
from peerdiff.methods.base import Call, Context, Prompts
from peerdiff.model.adapters import AdapterConfig
from peerdiff.model.inject import placeholder_names

STYLE_LABEL = "[User Style]"


def token_line_conversation(
    sample: Sample, ctx: Context, label: str, names: Sequence[str]
) -> list[Message]:
    """The Non-Perso prompt plus one ``label: <soft tokens>`` line at the end of the user turn.

    Last, so that everything before it is ordinary text: training runs it without gradients
    and the swap probe computes it once for all donors.
    """
    from peerdiff.methods.nonperso import nonperso_conversation

    conv = nonperso_conversation(sample, ctx)
    conv[-1] = {**conv[-1], "content": conv[-1]["content"] + f"\n{label}: {''.join(names)}"}
    return conv


class SoftMethod:
    """Base of the soft-prompt methods; subclasses set ``kind`` and build prompts/features."""

    kind = "constant"
    lr_section = "constant"
    # the setting that decides the tokens per placeholder group (``None``: fixed by the
    # kind); named when a shared adapter folder's count differs from the run's
    tokens_setting: str | None = None

    def __init__(self, name: str, cfg: RunConfig, **spec) -> None:
        self.name = name
        self.cfg = cfg
        self.spec = spec
        self.slots = cfg.contrast.max_slots

    def adapter_config(self, encoder_dim: int = 1, llm_hidden: int = 1) -> AdapterConfig:
        """The adapter's settings (sizes filled in from the encoder and the LLM)."""
        return AdapterConfig.for_kind(
            self.kind,
            encoder_dim=encoder_dim,
            llm_hidden=llm_hidden,
            base_model=llm_identity(self.cfg.llm.model),
            **self.adapter_settings(),
            **self.spec,
        )

    def adapter_settings(self) -> dict:
        return {}

    def placeholders(self) -> list[str]:
        """Placeholder token names in soft-token order (the adapter's output order)."""
        c = self.adapter_config()
        return placeholder_names(c.groups, c.tokens_per_group)

    def lr(self) -> float:
        """This method's learning rate (its section's ``lr``, else ``train.lr``)."""
        return getattr(self.cfg, self.lr_section).lr or self.cfg.train.lr

    def group_settings(self) -> dict[str, dict]:
        """Named parameter groups' own ``lr`` / ``weight_decay`` (None: the method's)."""
        return {}

    def loss_weights(self) -> dict[str, float]:
        """Weights of the adapter's auxiliary losses (``recon_weight``, ``kl_weight``)."""
        return {"recon_weight": 0.0, "kl_weight": 0.0}

    def prompts(self, samples: Sequence[Sample], ctx: Context, call: Call | None = None) -> Prompts:
        return Prompts(
            [self.conversation(s, ctx) for s in samples], features=self.features(samples, ctx)
        )

    def conversation(self, sample: Sample, ctx: Context) -> list[Message]:
        raise NotImplementedError

    def features(self, samples: Sequence[Sample], ctx: Context) -> dict:
        raise NotImplementedError
