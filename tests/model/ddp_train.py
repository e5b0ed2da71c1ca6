"""Run by tests/model/test_ddp.py under `accelerate launch --cpu --num_processes 2`."""

import copy
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import char_tokenizer, tiny_llama

from peerdiff.config import TrainConfig
from peerdiff.model.adapters import DEPConfig, build_adapter
from peerdiff.model.inject import Injector, add_placeholders, placeholder_names
from peerdiff.model.lm import Example
from peerdiff.train import Trainer

out = Path(sys.argv[1])
tok = copy.deepcopy(char_tokenizer())
model = tiny_llama(len(tok))
cfg = DEPConfig(encoder_dim=12, llm_hidden=model.config.hidden_size, slots=2)
ids = add_placeholders(tok, placeholder_names(cfg.groups, cfg.slots))
torch.manual_seed(0)
adapter = build_adapter(cfg)
rng = np.random.default_rng(0)
n = 8
feats = {
    "hist": rng.normal(size=(n, 2, 12)).astype(np.float32),
    "diff": rng.normal(size=(n, 2, 12)).astype(np.float32),
    "mask": np.ones((n, 2), bool),
}
ex = [
    Example(
        tok(f"item {i} " + "".join(placeholder_names(cfg.groups, 2)))["input_ids"],
        tok(" good" * (1 + i % 3))["input_ids"] + [2],
    )
    for i in range(n)
]
tc = TrainConfig(epochs=2, batch_size=2, grad_accum=1, warmup_ratio=0.0)
tr = Trainer(
    model,
    adapter,
    Injector(model.get_input_embeddings(), ids),
    pad_id=tok.pad_token_id,
    cfg=tc,
    lr=1e-2,
    out_dir=out / "train",
    key="ddp",
)
tr.fit(ex, feats)
import os  # noqa: E402

h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in adapter.parameters())).hexdigest()
(out / f"rank{os.environ['RANK']}.txt").write_text(h)
