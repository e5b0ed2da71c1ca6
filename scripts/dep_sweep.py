"""Which CPU settings make DEP's soft tokens carry the user? A resumable sweep.

Each setting is a list of ``key=value`` overrides on a base config, run in its own run
directory (``runs/sweep/<name>``): train one method (``dep`` by default), its target NLL on
the test split, the user-swap probe on its training samples (memorisation) and on the test
split (generalisation), and optionally generation + METEOR. With ``--controls``, the
constant and ``dep-mean`` controls are trained under the same settings and DEP's NLL is
compared with theirs (paired bootstrap over test samples).

Rows go to ``<out>.json`` (finished settings are skipped on a re-run) and the table to
``<out>.md``::

    python scripts/dep_sweep.py --out docs/dep-sweep
    python scripts/dep_sweep.py --out docs/dep-sweep --only std-lr1e-3 --controls --generate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from peerdiff import stages  # noqa: E402
from peerdiff.backends import Backends  # noqa: E402
from peerdiff.config import load_config  # noqa: E402
from peerdiff.metrics import bootstrap  # noqa: E402
from peerdiff.report import markdown_table  # noqa: E402
from peerdiff.stage import read_json  # noqa: E402

# settings shared by every row: the tokens layout unless a row says otherwise
COMMON = [
    "dep.layout=tokens",
    "train.select_by=nll",
    "train.epochs=2",
    "train.batch_size=4",
    "train.grad_accum=1",
    "train.warmup_ratio=0.05",
    "train.max_target_tokens=96",
    "train.val_samples=24",
    "train.samples_per_user=1",
    "evaluate.nll_target_tokens=96",
    "probe.donors=4",
    "probe.max_samples=87",
]
SETTINGS: dict[str, list[str]] = {
    # the quick job's DEP before this sweep: text layout, PyTorch init, lr 2e-3
    "before": [
        "dep.layout=text",
        "dep.compact=true",
        "dep.text_reviews=1",
        "dep.max_review_chars=200",
        "dep.init=torch",
        "dep.lr=2e-3",
    ],
    "ref-raw": ["dep.init=reference", "dep.features=raw", "dep.lr=1e-3"],
    "ref-center": ["dep.init=reference", "dep.features=center", "dep.lr=1e-3"],
    "ref-std": ["dep.init=reference", "dep.features=standardize", "dep.lr=1e-3"],
    "ref-std-recon1": [
        "dep.init=reference",
        "dep.features=standardize",
        "dep.lr=1e-3",
        "dep.recon_weight=1",
    ],
    "ref-std-lr3e-3": ["dep.init=reference", "dep.features=standardize", "dep.lr=3e-3"],
    "ref-std-lr1e-4": ["dep.init=reference", "dep.features=standardize", "dep.lr=1e-4"],
    "ref-std-4ep": [
        "dep.init=reference",
        "dep.features=standardize",
        "dep.lr=1e-3",
        "train.epochs=4",
    ],
    "ref-std-all": [
        "dep.init=reference",
        "dep.features=standardize",
        "dep.lr=1e-3",
        "train.samples_per_user=null",
    ],
    # round 2: every training sample; the medium preset (317 users, 315 test samples)
    "medium-std-all": [
        "data.preset=medium",
        "dep.init=reference",
        "dep.features=standardize",
        "dep.lr=1e-3",
        "train.samples_per_user=null",
        "probe.max_samples=315",
    ],
    "ref-std-all-3ep": [
        "dep.init=reference",
        "dep.features=standardize",
        "dep.lr=1e-3",
        "train.samples_per_user=null",
        "train.epochs=3",
    ],
    "ref-raw-all": [
        "dep.init=reference",
        "dep.features=raw",
        "dep.lr=1e-3",
        "train.samples_per_user=null",
    ],
}


def nll_per_sample(stage) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(stage.path("nll.parquet")).to_pydict()
    return np.asarray(t["sample_id"]), np.asarray(t["nll_sum"]) / np.maximum(t["nll_tokens"], 1)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    d, lo, hi = bootstrap(lambda i: float(a[i].mean() - b[i].mean()), len(a), 1000, 0)
    return {"diff": d, "ci": [lo, hi]}


def run_setting(name: str, overrides: list[str], args, local) -> dict:
    cfg = load_config(args.config, [*COMMON, *overrides, f"run_dir=runs/sweep/{name}"])
    backends = Backends(cfg, local=local)
    method = args.method
    t0 = time.time()
    data = stages.data(cfg, [method])
    adapter = stages.train(cfg, method, data, backends)
    man = adapter.manifest()
    nll = stages.likelihood(cfg, method, "test", data, backends, adapter)
    ids, own_nll = nll_per_sample(nll)
    row = {
        "name": name,
        "overrides": overrides,
        "train_seconds": man["seconds"],
        "train_samples": man["train_samples"],
        "epochs": [
            {k: e[k] for k in ("epoch", "train_loss", "val_score")} for e in man["state"]["epochs"]
        ],
        "best_epoch": man["state"]["best_epoch"],
        "nll": float(own_nll.mean()),
    }
    for split in ("train", "test"):
        row[f"probe_{split}"] = read_json(
            stages.probe(cfg, method, split, data, backends, adapter).path("summary.json")
        )
    if args.controls:
        for ctrl in ("constant", "dep-mean"):
            cdata = stages.data(cfg, [ctrl])
            cad = stages.train(cfg, ctrl, cdata, backends)
            cid, cnll = nll_per_sample(stages.likelihood(cfg, ctrl, "test", cdata, backends, cad))
            assert list(cid) == list(ids)
            row[f"vs_{ctrl}"] = paired(own_nll, cnll)
            row[f"nll_{ctrl}"] = float(cnll.mean())
    if args.generate:
        gen = stages.generate(cfg, method, "test", data, backends, adapter)
        ev = stages.evaluate(cfg, method, "test", gen, nll, data, backends)
        row["meteor"] = read_json(ev.path("summary.json"))["scores"]["meteor"]
    row["wall_seconds"] = round(time.time() - t0, 1)
    return row


def fmt_ci(x: dict | None, key="diff") -> str:
    if not x:
        return ""
    lo, hi = x["ci"] if "ci" in x else x["delta_ci"]
    return f"{x[key]:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def write_table(rows: list[dict], out: Path) -> None:
    body = []
    for r in rows:
        body.append(
            [
                r["name"],
                " ".join(r["overrides"]) or "(common settings)",
                f"{r['nll']:.4f}",
                fmt_ci(r.get("probe_train"), "delta"),
                fmt_ci(r.get("probe_test"), "delta"),
                f"{r['probe_test']['own_best_share']:.0%}",
                fmt_ci(r.get("vs_constant")),
                fmt_ci(r.get("vs_dep-mean")),
                "" if r.get("meteor") is None else f"{r['meteor']:.4f}",
                f"{r['train_seconds']:.0f}",
                f"{r['wall_seconds']:.0f}",
            ]
        )
    head = [
        "setting",
        "overrides",
        "test NLL",
        "swap delta, train (95% CI)",
        "swap delta, test (95% CI)",
        "own best (test)",
        "NLL - constant (95% CI)",
        "NLL - dep-mean (95% CI)",
        "METEOR",
        "train s",
        "wall s",
    ]
    text = (
        "# DEP sweep\n\n"
        f"Common settings: `{' '.join(COMMON)}` on `configs/quick.yaml` (bundled Digital "
        "Music, small preset, SmolLM2-135M, 2 CPU cores). Swap delta: NLL with 4 other "
        "users' features minus own, nats per target token (> 0: the soft tokens carry the "
        "user). NLL columns: DEP minus the control (same settings, same prompt text), paired "
        "over the test samples (< 0: DEP better). Probes use up to `probe.max_samples` "
        "samples per split (a seeded subset).\n\n" + markdown_table(head, body)
    )
    out.with_suffix(".md").write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quick.yaml")
    p.add_argument("--out", default="docs/dep-sweep")
    p.add_argument("--method", default="dep")
    p.add_argument("--only", action="append", help="settings to run (default: all)")
    p.add_argument("--controls", action="store_true", help="also constant and dep-mean")
    p.add_argument("--generate", action="store_true", help="also generation and METEOR")
    p.add_argument("--redo", action="store_true", help="re-run finished settings")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = out.with_suffix(".json")
    rows = json.loads(store.read_text()) if store.exists() else []
    local = Backends(load_config(args.config)).local
    for name in args.only or list(SETTINGS):
        done = [r for r in rows if r["name"] == name]
        if done and not args.redo and not (args.controls and "vs_constant" not in done[0]):
            continue
        print(f"== {name}: {' '.join(SETTINGS[name])}", file=sys.stderr, flush=True)
        row = run_setting(name, SETTINGS[name], args, local)
        rows = [r for r in rows if r["name"] != name] + [row]
        store.write_text(json.dumps(rows, indent=1))
        write_table(rows, out)
        print(json.dumps(row)[:600], file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
