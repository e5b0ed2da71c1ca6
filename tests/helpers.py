"""Test helpers: tiny models built from a config, synthetic review files in the Amazon'23
schema, and the overrides that point a run at them. Tests import these; conftest's fixtures
use them."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PEERDIFF_DATA", REPO.parent / "shared" / "data"))
DIGITAL_MUSIC = SHARED_DATA / "amazon-2023-schema-digital-music"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]


def char_tokenizer():
    """A character-level fast tokenizer built in code, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    from tokenizers import decoders

    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_llama(
    vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, init: float = 0.02
):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        initializer_range=init,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


def make_tiny_encoder(d: Path) -> Path:
    """Write a 2-layer random BERT with a word-level tokenizer into ``d``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = [
        "the",
        "a",
        "great",
        "album",
        "song",
        "songs",
        "music",
        "bad",
        "good",
        "love",
        "hate",
        "it",
        "is",
        "was",
        "this",
        "i",
    ]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=64,
    )
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_jsonl(path: Path, records: list, gz: bool = False) -> Path:
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(lines)
    else:
        path.write_text(lines)
    return path


# ----------------------------------------------------------------------------- synthetic data

WORDS = [
    "melody",
    "rhythm",
    "album",
    "track",
    "voice",
    "guitar",
    "piano",
    "drums",
    "lyrics",
    "chorus",
    "bass",
    "tempo",
    "harmony",
    "production",
    "sound",
    "record",
    "band",
    "singer",
    "song",
    "mix",
    "beat",
    "groove",
    "hook",
    "verse",
    "bridge",
]
MOODS = ("great", "lovely", "boring", "bright", "dark", "warm", "catchy", "flat", "fresh")


def write_synthetic_amazon23(
    root: Path, n_users: int = 24, n_items: int = 20, per_user: int = 12, seed: int = 0
) -> Path:
    """Reviews and metadata in the Amazon Reviews'23 schema, shaped for the ``small`` preset.

    Every user has a signature phrase and a favourite mood word, so users differ in style;
    items have titles and descriptions. Returns ``root`` (files ``reviews.jsonl.gz``,
    ``meta.jsonl.gz``).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    reviews = []
    for u in range(n_users):
        sign = f"as user {u} I always say {WORDS[u % len(WORDS)]} {WORDS[(3 * u + 1) % len(WORDS)]}"
        mood = MOODS[u % len(MOODS)]
        t0 = 1_500_000_000_000 + int(rng.integers(0, 10_000_000))
        for k, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            body = " ".join(rng.choice(WORDS, 14))
            reviews.append(
                {
                    "user_id": f"U{u:03d}",
                    "parent_asin": f"I{i:03d}",
                    "rating": float(1 + (u + k) % 5),
                    "title": f"{mood.title()} {WORDS[int(i) % len(WORDS)]} number {k}",
                    "text": f"This {mood} album: {body}. {sign}. The {WORDS[int(i) % 9]} is {mood}.",
                    "timestamp": t0 + k * 86_400_000,
                }
            )
    meta = [
        {
            "parent_asin": f"I{i:03d}",
            "title": f"Album {i} of the {WORDS[i % len(WORDS)]} band",
            "description": [
                f"A record about {WORDS[(i + 5) % len(WORDS)]} and {WORDS[(i + 9) % len(WORDS)]}."
            ],
        }
        for i in range(n_items)
    ]
    write_jsonl(root / "reviews.jsonl.gz", reviews, gz=True)
    write_jsonl(root / "meta.jsonl.gz", meta, gz=True)
    return root


def synthetic_overrides(root: Path, run_dir: Path) -> list[str]:
    """Config overrides that point a run at the synthetic files."""
    return [
        f"data.root={root}",
        "data.reviews=reviews.jsonl.gz",
        "data.items=meta.jsonl.gz",
        f"run_dir={run_dir}",
    ]


TINY_RUN = [
    "llm.model=tiny",
    "methods=[nonperso,constant,dep]",
    "generate.max_new_tokens=4",
    # the first 4 test samples, a subset of the split: the generate, nll and evaluate
    # folders are <method>-test-n4 (training and the probe keep their names)
    "generate.max_samples=4",
    "train.epochs=1",
    "train.samples_per_user=1",
    "train.val_samples=2",
    "train.max_target_tokens=8",
    "train.batch_size=4",
    "train.grad_accum=1",
    "evaluate.bertscore=false",
    "evaluate.nll_target_tokens=8",
    "probe.splits=[test]",
    "probe.donors=2",
    "probe.max_samples=4",
]
