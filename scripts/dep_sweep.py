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

``--round medium`` runs the medium-preset rows (residual DEP, shrinkage, the constant's own
tuning, seeds) on ``configs/evidence-medium.yaml``; a control whose training does not depend
on a row's settings (``constant`` under a DEP-only change) is trained once and copied into
the rows that share its training key::

    python scripts/dep_sweep.py --round medium --out docs/dep-sweep-medium --controls
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

from peerdiff import stages
from peerdiff.backends import Backends
from peerdiff.config import load_config
from peerdiff.metrics import bootstrap
from peerdiff.report import markdown_table
from peerdiff.stage import read_json

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


# Round 3, the medium preset (configs/evidence-medium.yaml: residual DEP, standardised
# inputs, every training sample, lr 1e-3, 2 epochs, NLL selection). bfloat16 autocast
# training unless a row says otherwise (its speed and NLL against float32: bf16 vs fp32).
MEDIUM_COMMON = ["train.precision=bfloat16", "probe.max_samples=315"]
# building blocks of the round-4 and round-5 rows (issue 22: the constant's tuned rate, lower-capacity
# branches); each row's override list is the same as when it ran
DROP_4EP = ["dep.feature_dropout=0.1", "train.epochs=4"]
POOL_R64 = [*DROP_4EP, "dep.pool_slots=true", "dep.branch_rank=64"]
LR3E3 = ["dep.lr=3e-3", "constant.lr=3e-3"]
LR1E2 = ["dep.lr=1e-2", "constant.lr=1e-2"]
LR3E2 = ["dep.lr=3e-2", "constant.lr=3e-2"]
BLR1E3 = ["dep.branch_lr=1e-3"]  # the user branch's own rate (round 5)
MEDIUM: dict[str, list[str]] = {
    "res-fp32": ["train.precision=float32"],  # configs/evidence-medium.yaml as it is
    "res": [],
    "nores": ["dep.residual=false"],
    "res-drop0.1": ["dep.feature_dropout=0.1"],
    "res-sdrop0.2": ["dep.feature_dropout=0.2", "dep.dropout_unit=sample"],
    "res-drop0.3": ["dep.feature_dropout=0.3"],
    "res-recon1": ["dep.recon_weight=1"],
    "res-lr3e-3": ["dep.lr=3e-3", "constant.lr=3e-3"],
    "res-lr1e-4": ["dep.lr=1e-4", "constant.lr=1e-4"],
    "res-3ep": ["train.epochs=3"],
    "res-seed1": ["seed=1"],
    "res-drop0.1-seed1": ["dep.feature_dropout=0.1", "seed=1"],
    # every method was still improving at epoch 2 (validation NLL -0.014 to -0.02 per epoch)
    "res-drop0.1-4ep": ["dep.feature_dropout=0.1", "train.epochs=4"],
    "res-drop0.1-4ep-seed1": ["dep.feature_dropout=0.1", "train.epochs=4", "seed=1"],
    # the constant's own tuning found lr 3e-3 better at 4 epochs (3.6472 vs 3.6760): DEP and
    # both controls at that rate
    "res-drop0.1-4ep-lr3e-3": [*DROP_4EP, *LR3E3],
    # the pooled rank-64 branch (better than the full one at lr 1e-3) at the tuned rate
    "lowcap-pool-r64-4ep-lr3e-3": [*POOL_R64, *LR3E3],
    "lowcap-pool-r64-4ep-seed1": [*POOL_R64, "seed=1"],
    "lowcap-pool-r64-4ep-lr3e-3-seed1": [*POOL_R64, *LR3E3, "seed=1"],
    # the base tokens at the constant's tuned rate, the user branch at the rate where it
    # beat dep-mean (at 3e-3 for both, every user-free prompt beat DEP)
    "lowcap-pool-r64-4ep-lr3e-3-blr1e-3": [*POOL_R64, *LR3E3, *BLR1E3],
    "lowcap-pool-r64-4ep-lr3e-3-blr1e-3-seed1": [*POOL_R64, *LR3E3, *BLR1E3, "seed=1"],
    # the constant was better still at lr 1e-2 (round 5): DEP's base tokens at that rate
    "lowcap-pool-r64-4ep-lr1e-2-blr1e-3": [*POOL_R64, *LR1E2, *BLR1E3],
    "lowcap-pool-r64-4ep-lr1e-2-blr1e-3-seed1": [*POOL_R64, *LR1E2, *BLR1E3, "seed=1"],
    # the constant at 3e-2 tied its 1e-2 on test (3.6248 vs 3.6256; worse on validation):
    # DEP's base tokens there too
    "lowcap-pool-r64-4ep-lr3e-2-blr1e-3": [*POOL_R64, *LR3E2, *BLR1E3],
    # lower-capacity user branches (issue 22, item 4), on the 4-epoch row's settings
    "lowcap-pool-4ep": [*DROP_4EP, "dep.pool_slots=true"],
    "lowcap-pool-r64-4ep": POOL_R64,
    "lowcap-blr-4ep": [*DROP_4EP, "dep.branch_lr=3e-4", "dep.branch_weight_decay=0.1"],
}
# The constant control's own tuning (issue 22, item 3): `--round constant-medium --method
# constant --no-probe`; each row's epoch is chosen by validation NLL, as DEP's is.
CONSTANT_MEDIUM: dict[str, list[str]] = {
    "const-2ep": [],
    "const-4ep": ["train.epochs=4"],
    "const-6ep": ["train.epochs=6"],
    "const-lr3e-3-4ep": ["constant.lr=3e-3", "train.epochs=4"],
    "const-lr1e-4-4ep": ["constant.lr=1e-4", "train.epochs=4"],
    # still improving at lr 3e-3, epoch 4: one rate further up
    "const-lr1e-2-4ep": ["constant.lr=1e-2", "train.epochs=4"],
    # best so far at 1e-2: one rate further up, to see whether it turns
    "const-lr3e-2-4ep": ["constant.lr=3e-2", "train.epochs=4"],
}
ROUNDS = {
    "quick": ("configs/quick.yaml", COMMON, SETTINGS),
    "medium": ("configs/evidence-medium.yaml", MEDIUM_COMMON, MEDIUM),
    "constant-medium": ("configs/evidence-medium.yaml", MEDIUM_COMMON, CONSTANT_MEDIUM),
}


def copy_finished(here: Path, key: str, stage_glob: str, roots: list[Path], label: str) -> None:
    """Replace ``here`` with the first stage directory under ``roots`` (``*/<stage_glob>``)
    whose manifest holds ``key``."""
    import shutil

    for root in roots:
        for m in sorted(root.glob(f"*/{stage_glob}/manifest.json")):
            if m.parent != here and read_json(m).get("key") == key:
                print(f"   {label}: reusing {m.parent}", file=sys.stderr, flush=True)
                shutil.rmtree(here, ignore_errors=True)
                shutil.copytree(m.parent, here)
                return


def reuse_trained(cfg, method: str, data, roots: list[Path]) -> None:
    """Copy an already trained ``method`` with the same training key from another run
    directory under ``roots`` (the constant under a DEP-only change, or a row that a full
    ``peerdiff run`` already trained). Training is the expensive part; everything after it
    is recomputed or skipped by its own key."""
    from peerdiff.stages.train import train_key

    key = train_key(cfg, method, data)
    here = cfg.run_path / "train" / method
    if (here / "manifest.json").exists() and read_json(here / "manifest.json").get("key") == key:
        return
    copy_finished(here, key, f"train/{method}", roots, method)


def reuse_scored(cfg, method: str, data, backends, adapter, roots: list[Path]) -> None:
    """Copy ``method``'s test NLL stage from another run directory whose stage has the same
    key (a reused control's adapter gives the same key): a 315-sample NLL pass is minutes."""
    from peerdiff.stages.common import MethodSplit

    plan = MethodSplit(cfg, method, "test", data, backends, adapter).nll_plan()
    if plan is None or plan.stage.is_done(plan.key):
        return
    copy_finished(plan.stage.dir, plan.key, f"nll/{plan.stage.dir.name}", roots, method)


def nll_per_sample(stage) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(stage.path("nll.parquet")).to_pydict()
    return np.asarray(t["sample_id"]), np.asarray(t["nll_sum"]) / np.maximum(t["nll_tokens"], 1)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    d, lo, hi = bootstrap(lambda i: float(a[i].mean() - b[i].mean()), len(a), 1000, 0)
    return {"diff": d, "ci": [lo, hi]}


def run_setting(name: str, overrides: list[str], args, local) -> dict:
    config, common, _ = ROUNDS[args.round]
    root = Path("runs") / ("sweep" if args.round == "quick" else f"sweep-{args.round}")
    cfg = load_config(args.config or config, [*common, *overrides, f"run_dir={root / name}"])
    backends = Backends(cfg, local=local)
    method = args.method
    t0 = time.time()
    data = stages.data(cfg, [method])
    roots = [root, Path("runs"), *sorted(Path("runs").glob("sweep*"))]
    reuse_trained(cfg, method, data, roots)
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
    for split in () if args.no_probe else args.probe_splits:
        row[f"probe_{split}"] = read_json(
            stages.probe(cfg, method, split, data, backends, adapter).path("summary.json")
        )
    if args.controls:
        controls = {}
        for ctrl in ("constant", "dep-mean"):
            cdata = stages.data(cfg, [ctrl])
            reuse_trained(cfg, ctrl, cdata, roots)
            cad = stages.train(cfg, ctrl, cdata, backends)
            reuse_scored(cfg, ctrl, cdata, backends, cad, roots)
            row[f"train_seconds_{ctrl}"] = cad.manifest()["seconds"]
            cid, cnll = nll_per_sample(stages.likelihood(cfg, ctrl, "test", cdata, backends, cad))
            assert list(cid) == list(ids)
            row[f"vs_{ctrl}"] = paired(own_nll, cnll)
            row[f"nll_{ctrl}"] = float(cnll.mean())
            controls[ctrl] = (cid, cnll)
        row["gains"] = who_gains(cfg.run_path, (ids, own_nll), controls)
    if args.generate:
        gen = stages.generate(cfg, method, "test", data, backends, adapter)
        ev = stages.evaluate(cfg, method, "test", gen, nll, data, backends)
        row["meteor"] = read_json(ev.path("summary.json"))["scores"]["meteor"]
    row["wall_seconds"] = round(time.time() - t0, 1)
    return row


def who_gains(run_dir: Path, dep: tuple, controls: dict[str, tuple]) -> list[dict]:
    """Each control's NLL minus DEP's by the user's profile-length quartile (the report's
    ``gains_by_profile``; > 0: DEP better)."""
    from peerdiff.report import MethodScores, gains_by_profile, profile_lengths

    def scores(name, ids, nll):
        return MethodScores(name, "test", ids, {"nll": nll}, np.zeros((len(ids), 10)), [])

    ms = [scores("dep", *dep)] + [scores(c, *v) for c, v in controls.items()]
    g = gains_by_profile(ms, "dep", profile_lengths(run_dir))
    return g["rows"] if g else []


def fmt_ci(x: dict | None, key="diff") -> str:
    if not x:
        return ""
    lo, hi = x["ci"] if "ci" in x else x["delta_ci"]
    return f"{x[key]:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def write_constant_table(rows: list[dict], out: Path, round_: str) -> None:
    """The constant's tuning: validation NLL of each epoch, the selected one, test NLL."""
    body = [
        [
            r["name"],
            " ".join(r["overrides"]) or "(common settings)",
            " / ".join(f"{-e['val_score']:.4f}" for e in r["epochs"]),
            str(r["best_epoch"]),
            f"{r['nll']:.4f}",
            f"{r['train_seconds']:.0f}",
        ]
        for r in rows
    ]
    head = ["setting", "overrides", "validation NLL by epoch", "selected", "test NLL", "train s"]
    config, common, _ = ROUNDS[round_]
    out.with_suffix(".md").write_text(
        "# The constant control's tuning\n\n"
        f"Common settings: `{' '.join(common)}` on `{config}` (SmolLM2-135M-Instruct, Q4_1 "
        "GGUF dequantised to float32, 2 CPU cores). The epoch is chosen by validation NLL "
        "(24 validation samples); test NLL over the 315 test samples, nats per target token."
        "\n\n" + markdown_table(head, body)
    )


def write_table(rows: list[dict], out: Path, round_: str = "quick") -> None:
    if round_ == "constant-medium":
        return write_constant_table(rows, out, round_)
    body = []
    for r in rows:
        body.append(
            [
                r["name"],
                " ".join(r["overrides"]) or "(common settings)",
                f"{r['nll']:.4f}",
                fmt_ci(r.get("probe_train"), "delta"),
                fmt_ci(r.get("probe_test"), "delta"),
                f"{r['probe_test']['own_best_share']:.0%}" if r.get("probe_test") else "",
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
    config, common, _ = ROUNDS[round_]
    text = (
        "# DEP sweep\n\n"
        f"Common settings: `{' '.join(common)}` on `{config}` (bundled Digital "
        "Music, SmolLM2-135M Q4_1 GGUF dequantised to float32, 2 CPU cores). Swap delta: NLL with 4 other "
        "users' features minus own, nats per target token (> 0: the soft tokens carry the "
        "user). NLL columns: DEP minus the control (same settings, same prompt text), paired "
        "over the test samples (< 0: DEP better). Probes use up to `probe.max_samples` "
        "samples per split (a seeded subset).\n\n" + markdown_table(head, body)
    )
    out.with_suffix(".md").write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="default: the round's config")
    p.add_argument("--round", choices=list(ROUNDS), default="quick")
    p.add_argument("--out", default="docs/dep-sweep")
    p.add_argument("--method", default="dep")
    p.add_argument("--only", action="append", help="settings to run (default: all)")
    p.add_argument("--controls", action="store_true", help="also constant and dep-mean")
    p.add_argument("--generate", action="store_true", help="also generation and METEOR")
    p.add_argument("--redo", action="store_true", help="re-run finished settings")
    p.add_argument("--no-probe", action="store_true", help="skip the swap probes (NLL only)")
    p.add_argument(
        "--probe-splits", nargs="+", default=["train", "test"], help="splits the probe runs on"
    )
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = out.with_suffix(".json")
    rows = json.loads(store.read_text()) if store.exists() else []
    config, _, settings = ROUNDS[args.round]
    local = Backends(load_config(args.config or config)).local
    for name in args.only or list(settings):
        done = [r for r in rows if r["name"] == name]
        if done and not args.redo and not (args.controls and "vs_constant" not in done[0]):
            continue
        print(f"== {name}: {' '.join(settings[name])}", file=sys.stderr, flush=True)
        row = run_setting(name, settings[name], args, local)
        rows = [r for r in rows if r["name"] != name] + [row]
        store.write_text(json.dumps(rows, indent=1))
        write_table(rows, out, args.round)
        print(json.dumps(row)[:600], file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
