"""DRP (arXiv 2511.15389): DPL's inputs with open-ended style dimensions and a reflective pass.

The extractor is asked for as many style dimensions as it finds
(``--- [Feature] Definition: ... Difference Description: ... ---``; reasoning before
``</think>`` is dropped), and a reflective validation pass keeps the real ones; its output is
what the summarizer reads (the DRP code computed it and then used the unvalidated
extraction). The stats count features extracted, kept, and unique per user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from peerdiff.backends.base import strip_reasoning
from peerdiff.data.schema import Sample
from peerdiff.methods import prompts
from peerdiff.methods.base import Call, Context
from peerdiff.methods.dpl import DPL, Pairs

DRP_EXTRACTOR = (
    "You are a user behavior analyst. You are given the title and description of an item, "
    "along with the current user's review and other users' reviews of the same item. Your "
    "task is to identify stylistic and expressive differences between the current user's "
    "review and those of others, independent of content or opinion. Begin with these "
    "dimensions: [Writing Style] (lexical choices and syntactic structure), [Emotional Style] "
    "(affective tone), [Semantic Style] (information density and contextual coherence). Then "
    "identify as many additional stylistic and expressive dimensions as you can where the "
    "user's review diverges from the others. Focus on style, not on item-specific opinions. "
    "For each dimension give its name, a concise definition and how the user differs. "
    "Format your output strictly as follows:\n"
    "--- [Feature Name] Definition: ... Difference Description: ... ---\n"
    "(repeat for every dimension)"
)
DRP_VALIDATOR = (
    "You are a user behavior analyst. You are given the title and description of an item, "
    "the current user's review and other users' reviews of the same item, and a set of "
    "extracted difference descriptions comparing the current user's review with the others. "
    "Keep only the descriptions that really distinguish the current user's style and "
    "expression from the others; drop the rest. Format your output strictly as follows:\n"
    "--- [Feature Name] Definition: ... Difference Description: ... ---\n"
    "(repeat for every valid dimension)"
)
_FEATURE = re.compile(r"\[([^\[\]\n]{2,60})\]\s*[:\-]?\s*(?:\n\s*)?Definition", re.I)
_BOLD = re.compile(r"\*\*([^*\n]{2,60}?)\s*(?::\s*\*\*|\*\*\s*:)")
_NOT_FEATURES = {
    "definition",
    "difference description",
    "difference",
    "summary",
    "review",
    "feature name",
    "item title",
    "item description",
}


def parse_features(text: str) -> list[str]:
    """Feature names in a DRP extraction, normalised to lower case.

    The requested format is ``[Name] Definition: ...``; small models often write
    ``**Name**: ...`` instead, which is accepted too. Format words are not features.
    """
    names = [m.group(1) for m in _FEATURE.finditer(text)]
    names += [m.group(1) for m in _BOLD.finditer(text)]
    out = [re.sub(r"\s+", " ", n).strip(" :-").lower() for n in names]
    return [n for n in out if n and n not in _NOT_FEATURES]


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 2) if values else 0.0


class DRP(DPL):
    """Difference-aware reasoning personalization: open dimensions + reflective validation."""

    name = "drp"
    extractor_prompt = DRP_EXTRACTOR
    summary_what = "along the listed stylistic dimensions"

    def differences(
        self, ctx: Context, pairs: list[Pairs], ids: list[str], call: Call
    ) -> tuple[list[str | None], dict]:
        """Validated descriptions; an extraction that failed is not validated (``None``)."""
        extracted, _ = super().differences(ctx, pairs, ids, call)
        convs, which, k = [], [], 0
        for sample_pairs in pairs:
            for r, others in sample_pairs:
                if extracted[k] is not None:
                    user = (
                        self.extraction_input(ctx.bench, r, others, ctx.prompt.max_desc_chars)
                        + "\n[Extracted Differences]:\n"
                        + extracted[k]
                        + "\n"
                    )
                    convs.append(prompts.conversation(DRP_VALIDATOR, user))
                    which.append(k)
                k += 1
        raw = call(
            "validate", "validator", [ids[k] for k in which], convs, self.cfg.validate_max_tokens
        )
        validated: list[str | None] = [None] * len(extracted)
        for k, x in zip(which, raw):
            validated[k] = None if x is None else strip_reasoning(x)
        stats = {
            "features_extracted_per_item_mean": _mean(
                [len(parse_features(d)) for d in extracted if d is not None]
            ),
            "features_kept_per_item_mean": _mean(
                [len(parse_features(d)) for d in validated if d is not None]
            ),
        }
        return validated, stats

    def feature_stats(self, samples: Sequence[Sample], per_sample: list[list[str | None]]) -> dict:
        per_user: dict[str, set] = {}
        for s, ds in zip(samples, per_sample):
            feats = per_user.setdefault(s.user_id, set())
            for d in ds:
                if d is not None:
                    feats.update(parse_features(d))
        counts = [len(v) for v in per_user.values()]
        return {
            "unique_valid_features_per_user_mean": _mean(counts),
            "unique_valid_features_per_user_median": float(np.median(counts)) if counts else 0.0,
        }
