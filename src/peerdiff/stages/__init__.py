"""One plain function per stage: config + upstream results in, the stage's :class:`Stage` out.

Each stage is keyed on its upstream stages' keys plus exactly the settings it reads (never
the engine, device, thread count or report-only settings), writes atomically, and is
skipped when its manifest matches. Run directory::

    prepare/                        reviews/items/samples.parquet, stats.json
    embed/                          vectors.npy (one per profile review), inputs.npy
    contrast/                       slots, difference vectors
    train/<method>/                 epochs, log.jsonl, best/ (the selected adapter)
    calls/<method>-<split>/         cached intermediate LLM calls (PAG, DPL, DRP)
    generate/<method>-<split>/      predictions.jsonl
    nll/<method>-<split>/           target NLL per sample
    evaluate/<method>-<split>/      scores.parquet (per sample), summary.json
    probe/<method>-<split>/         user-swap probe per sample, summary.json

Generation never trains: a soft-prompt method without an adapter is an error naming the
command that trains it (``peerdiff run`` trains first).
"""

from peerdiff.stages.common import gen_params, samples, train_samples
from peerdiff.stages.data import Data, contrast, data, embed, prepare
from peerdiff.stages.outputs import evaluate, generate, likelihood, probe
from peerdiff.stages.train import train, trained

__all__ = [
    "Data",
    "contrast",
    "data",
    "embed",
    "evaluate",
    "gen_params",
    "generate",
    "likelihood",
    "prepare",
    "probe",
    "samples",
    "train",
    "train_samples",
    "trained",
]
