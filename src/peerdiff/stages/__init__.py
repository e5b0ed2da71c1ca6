"""The pipeline: one module per stage, each a plain function (config + upstream results in,
the stage's :class:`~peerdiff.stage.Stage` out) that owns its key, skip check and manifest.

In data-flow order (module: run-directory folder, outputs)::

    prepare.py     prepare/                   reviews/items/samples.parquet, stats.json
    embed.py       embed/                     vectors.npy (one per profile review), inputs.npy
    contrast.py    contrast/                  slots, difference vectors
    train.py       train/<method>/            epochs, log.jsonl, best/ (the selected adapter)
    generate.py    generate/<method>-<split>/ predictions.jsonl (+ calls/<method>-<split>/:
                                              cached intermediate calls of PAG, DPL, DRP)
    likelihood.py  nll/<method>-<split>/      target NLL per sample
    evaluate.py    evaluate/<method>-<split>/ scores.parquet (per sample), summary.json
    probe.py       probe/<method>-<split>/    user-swap probe per sample, summary.json

A subset run (``generate.max_samples`` below a split's size) writes its generate, nll,
evaluate and calls folders as ``<method>-<split>-n<N>`` (:func:`common.split_name`), beside
the full split's, never over them.

``data.py`` holds what the data stages produced (:class:`Data`); ``common.py`` the
decoding settings, sample lists and :class:`MethodSplit` (a method on a split) that the
later stages share. Each stage is keyed on its upstream stages' keys plus exactly the
settings it reads (never the engine, device, thread count or report-only settings), writes
atomically, and is skipped when its manifest matches.

Generation never trains: a soft-prompt method without an adapter is an error naming the
command that trains it (``peerdiff run`` trains first).
"""

from peerdiff.stages.common import MethodSplit, gen_params, samples, train_samples
from peerdiff.stages.contrast import contrast
from peerdiff.stages.data import Data, data
from peerdiff.stages.embed import embed
from peerdiff.stages.evaluate import evaluate
from peerdiff.stages.generate import generate
from peerdiff.stages.likelihood import likelihood
from peerdiff.stages.prepare import prepare
from peerdiff.stages.probe import probe
from peerdiff.stages.train import check_loggers_for, train, trained

__all__ = [
    "Data",
    "MethodSplit",
    "check_loggers_for",
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
