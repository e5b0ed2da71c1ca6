"""Text metrics, computed locally with no runtime downloads, kept per sample.

Definitions follow the papers' evaluation (Hugging Face ``evaluate`` wrappers), called
directly instead of through ``evaluate.load`` (which fetches scripts from the hub):

- ROUGE-1 / ROUGE-L: ``rouge_score`` F-measure, no stemming, mean over samples.
- METEOR: ``nltk`` ``meteor_score`` (alpha 0.9, beta 3, gamma 0.5) with WordNet 3.0 from
  Debian's ``wordnet-base``; tokens from NLTK's Treebank tokenizer after a regex sentence
  split (``word_tokenize`` would need the ``punkt`` download). Without WordNet, METEOR is
  reported as unavailable, never computed another way.
- BLEU: ``sacrebleu`` corpus BLEU. Per-sample n-gram statistics are kept, so corpus BLEU of
  any resample is exact (paired bootstrap).
- BERTScore F1: ``bert_score`` with the local all-MiniLM-L6-v2 (6 layers). Not comparable
  to the papers' numbers (other model); reports say so.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FIX = (
    "install WordNet 3.0: `sudo apt-get install wordnet-base wordnet-sense-index` "
    "(scripts/setup.sh does this when run as root)"
)
BERTSCORE_NOTE = (
    "BERTScore uses the local all-MiniLM-L6-v2, not the papers' model: compare it only "
    "within this table."
)
METRICS = ("rouge1", "rougeL", "meteor", "bleu", "bertscore")
OPTIONAL_METRICS = ("nll", "ppl", "judge")  # reported when computed
LOWER_IS_BETTER = frozenset({"nll", "ppl"})
LABELS = {
    "rouge1": "ROUGE-1",
    "rougeL": "ROUGE-L",
    "meteor": "METEOR",
    "bleu": "BLEU (0-100)",  # sacrebleu's scale, the papers' (a score of 0.06 is 0.06 of 100)
    "bertscore": "BERTScore",
    "nll": "NLL",
    "ppl": "PPL",
    "judge": "Judge",
}


def format_score(metric: str, v: float | None) -> str:
    """A score as tables show it (``n/a`` when missing)."""
    if v is None or not np.isfinite(v):
        return "n/a"
    if metric in ("bleu", "ppl"):
        return f"{v:.2f}"
    return f"{v:.4f}"


_SENT = re.compile(r"(?<=[.!?])\s+")


# ----------------------------------------------------------------------------- WordNet


def setup_wordnet(cache_dir: str | Path, source: Path = WORDNET_DIR) -> str | None:
    """Point NLTK at Debian's WordNet 3.0. Returns ``None`` when ready, else the reason.

    NLTK reads ``<root>/corpora/wordnet/`` and needs a ``lexnames`` table that Debian does
    not ship; we copy the Debian files there once (NLTK refuses links that leave its root)
    and add the table from our resources.
    """
    import shutil

    import nltk

    if not (source / "data.noun").exists():
        return f"WordNet not found in {source}; {WORDNET_FIX}"
    root = Path(cache_dir) / "nltk_data"
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        dest = target / f.name
        if f.is_file() and not dest.exists():
            tmp = dest.with_name(f".{f.name}.{os.getpid()}.tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, dest)
    lex = target / "lexnames"
    if not lex.exists():
        lex.write_text(
            resources.files("peerdiff").joinpath("resources/wordnet-lexnames").read_text()
        )
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        if not wordnet.synsets("music"):
            return "WordNet loaded but returned no synsets; " + WORDNET_FIX
    except (LookupError, OSError) as e:
        return f"WordNet could not be loaded ({e}); {WORDNET_FIX}"
    return None


# ----------------------------------------------------------------------------- metrics


def rouge(preds: list[str], refs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ROUGE-1 and ROUGE-L F-measures."""
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    r1, rl = [], []
    for p, r in zip(preds, refs):
        s = sc.score(r, p)
        r1.append(s["rouge1"].fmeasure)
        rl.append(s["rougeL"].fmeasure)
    return np.array(r1), np.array(rl)


def meteor_tokens(text: str) -> list[str]:
    from nltk.tokenize import NLTKWordTokenizer

    tok = NLTKWordTokenizer()
    return [t for sent in _SENT.split(text.strip()) if sent for t in tok.tokenize(sent)]


def meteor(preds: list[str], refs: list[str]) -> np.ndarray:
    """Per-sample METEOR (requires :func:`setup_wordnet` first)."""
    from nltk.translate.meteor_score import meteor_score

    return np.array(
        [
            meteor_score([meteor_tokens(r)], meteor_tokens(p), alpha=0.9, beta=3, gamma=0.5)
            for p, r in zip(preds, refs)
        ]
    )


def bleu_stats(preds: list[str], refs: list[str]) -> np.ndarray:
    """Per-sample BLEU sufficient statistics ``(n, 10)``: lengths, matches and totals."""
    from sacrebleu.metrics import BLEU

    return np.asarray(BLEU()._extract_corpus_statistics(preds, [refs]), dtype=np.int64)


def corpus_bleu(stats: np.ndarray) -> float:
    """sacrebleu corpus BLEU from summed per-sample statistics (equals ``corpus_score``)."""
    from sacrebleu.metrics import BLEU

    return float(BLEU()._compute_score_from_stats(stats.sum(0).tolist()).score)


def sentence_bleu(stats: np.ndarray) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    b = BLEU(effective_order=True)
    return np.array([b._compute_score_from_stats(s.tolist()).score for s in stats])


def bertscore(
    preds: list[str],
    refs: list[str],
    model: str = "default",
    layers: int | None = None,
    device: str = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """Per-sample BERTScore F1 (no baseline rescaling); an empty prediction or reference
    scores 0 (bert_score cannot encode an empty string with transformers 5 tokenizers)."""
    import bert_score
    from transformers import AutoConfig

    from peerdiff.embed import resolve_encoder

    path = resolve_encoder(model)
    if layers is None:
        layers = AutoConfig.from_pretrained(path).num_hidden_layers
    out = np.zeros(len(preds), dtype=np.float64)
    keep = [i for i, (p, r) in enumerate(zip(preds, refs)) if p.strip() and r.strip()]
    if keep:
        _, _, f1 = bert_score.score(
            [preds[i] for i in keep],
            [refs[i] for i in keep],
            model_type=path,
            num_layers=layers,
            batch_size=batch_size,
            device=device,
        )
        out[keep] = f1.numpy()
    return out


# ----------------------------------------------------------------------------- LLM judge

# The papers' 0-10 rubric (DPL's evaluation), criteria as published; the user turn ends with
# the "[Score]: " cue and the answer must start with the score.
JUDGE_SYSTEM = (
    "You are an impartial evaluator tasked with assessing how well an AI-generated item review "
    "is personalized for a specific user. Based on the provided item title and description, "
    "the user's rating for this item, and the review title, assign a score to the "
    "AI-generated review by comparing it to the user's real review.\n"
    "[Scoring Criteria]:\n"
    "[Score 0]: The AI-generated review is completely unrelated to the user's real review. It "
    "does not describe the item correctly or reflects the user's personal thoughts and "
    "preferences.\n"
    "[Score 2]: The AI-generated review has a weak connection to the user's real review. It "
    "may mention the item but does not include the key points or personal thoughts that the "
    "user included.\n"
    "[Score 4]: The AI-generated review partially matches the user's real review. Some key "
    "points are included, but important details are missing, and the review may feel too "
    "general or not personal enough.\n"
    "[Score 6]: The AI-generated review mostly matches the user's real review. It covers the "
    "main points but may miss some details or personal thoughts that the user included.\n"
    "[Score 8]: The AI-generated review is very similar to the user's real review. It "
    "captures the user's thoughts and preferences well, with only small differences.\n"
    "[Score 10]: The AI-generated review is almost the same as the user's real review. It "
    "includes all key details, personal thoughts, and preferences exactly as the user "
    "expressed them.\n"
    "Output the numerical score only."
)
_SCORE = re.compile(r"^\s*(?:\[?score\]?\s*:?\s*)?(\d+(?:\.\d+)?)(?![\d.])", re.I)


def judge_conversation(
    pred: str, ref: str, item_title: str, item_desc: str, rating: float, title: str
) -> list[dict[str, str]]:
    """The judge's input: item, rating, review title, the real and the generated review,
    then the ``[Score]: `` cue."""
    user = (
        f"[Item Title]: {item_title}\n[Item Description]: {item_desc}\n"
        f"[Review Rating]: {rating:g}\n[Review Title]: {title}\n"
        f"[User's real review]: {ref}\n[AI-generated review]: {pred}\n"
        "[Score]: "
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_judge(answer) -> float:
    """The score 0..10 an answer starts with (after any closed reasoning), else ``nan``.

    ``answer``: text or a :class:`~peerdiff.backends.base.Completion`. Cut at the budget,
    thinking without ``</think>``, text before the number ("Okay, the user rated it 5...")
    or a number above 10: ``nan`` (missing, left out of the mean).
    """
    from peerdiff.backends.base import Completion, answer_problem, strip_reasoning

    c = answer if isinstance(answer, Completion) else Completion(answer)
    if answer_problem(c, reasoning=True) is not None:  # the judge must finish, any model
        return float("nan")
    m = _SCORE.match(strip_reasoning(c.text))
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v if 0 <= v <= 10 else float("nan")


@dataclass
class Scores:
    """Per-sample scores (arrays aligned with the inputs), corpus scores and notes.

    ``per_sample["bleu"]`` is sentence BLEU (for reading only); the corpus BLEU of a
    resample comes from ``bleu_stats``.
    """

    per_sample: dict[str, np.ndarray]
    corpus: dict[str, float | None]
    bleu_stats: np.ndarray
    notes: list[str] = field(default_factory=list)


def score_texts(
    preds: list[str],
    refs: list[str],
    cache_dir: str | Path,
    use_bertscore: bool = True,
    bertscore_model: str = "default",
    bertscore_layers: int | None = None,
    device: str = "cpu",
) -> Scores:
    """All metrics for aligned predictions and references."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    per: dict[str, np.ndarray] = {}
    notes: list[str] = []
    per["rouge1"], per["rougeL"] = rouge(preds, refs)
    problem = setup_wordnet(cache_dir)
    if problem is None:
        per["meteor"] = meteor(preds, refs)
    else:
        notes.append(f"METEOR unavailable: {problem}")
    stats = bleu_stats(preds, refs)
    per["bleu"] = sentence_bleu(stats)
    if use_bertscore:
        per["bertscore"] = bertscore(preds, refs, bertscore_model, bertscore_layers, device)
        notes.append(BERTSCORE_NOTE)
    corpus: dict[str, float | None] = dict.fromkeys(METRICS)
    for m, v in per.items():
        corpus[m] = float(v.mean()) if len(v) else None
    corpus["bleu"] = corpus_bleu(stats) if len(preds) else None
    return Scores(per, corpus, stats, notes)


def bootstrap(
    stat: Callable[[np.ndarray], float], n_items: int, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """A statistic and its bootstrap 95% interval.

    Args:
        stat: row indices -> the statistic on those rows (paired comparisons index both
            methods with the same rows; corpus BLEU recomputes from n-gram statistics).
        n_items: number of rows resampled (with replacement, ``n`` times).

    Returns:
        ``(stat(all rows), 2.5th percentile, 97.5th percentile)``.
    """
    rng = np.random.default_rng(seed)
    vals = [stat(rng.integers(0, n_items, n_items)) for _ in range(n)]
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(stat(np.arange(n_items))), float(lo), float(hi)
