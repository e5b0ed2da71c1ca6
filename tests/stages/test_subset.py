"""A subset run (``generate.max_samples``) never rewrites a full run (issue 26, item 1: a
"faster look" with ``generate.max_samples=10`` cut the quick run's predictions from 87 lines
to 10 and its results table to n=10)."""

import copy
import hashlib
import json

from helpers import TINY_RUN, synthetic_overrides

from peerdiff.backends import Backends
from peerdiff.backends.hf import HFBackend
from peerdiff.config import load_config
from peerdiff.runner import run

METHODS = ("nonperso", "constant", "dep")  # TINY_RUN's


def _digests(run_dir) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in run_dir.rglob("*")
        if p.is_file()
    }


def _folders(files) -> set[str]:
    """Stage folders (``generate/dep-test``) and run-level files of a run's file list."""
    return {"/".join(f.split("/")[:2]) for f in files}


def test_a_subset_run_leaves_every_full_run_file_byte_identical(
    tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path
):
    model, tok, _ = tiny_lm
    run_dir = tmp_path / "run"
    base = [
        *synthetic_overrides(synthetic_root, run_dir),
        *TINY_RUN,
        "name=tiny",
        f"embed.model={tiny_encoder_dir}",
        f"cache_dir={tmp_path / 'cache'}",
    ]

    def go(max_samples: str) -> list[dict]:
        cfg = load_config(None, [*base, f"generate.max_samples={max_samples}"])
        local = HFBackend(model, copy.deepcopy(tok), batch_size=4)
        return run(cfg, backends=Backends(cfg, local=local))

    full = go("null")
    n = full[0]["n"]
    assert n > 4 and [(r["method"], r["split"]) for r in full] == [(m, "test") for m in METHODS]
    before = _digests(run_dir)

    subset = go("4")
    after = _digests(run_dir)
    assert {f: after[f] for f in before} == before  # every full-run file, byte for byte
    new = _folders(after) - _folders(before)
    assert all("-n4" in f for f in new), new  # only under the subset's names
    assert new >= {
        *(f"{s}/{m}-test-n4" for s in ("generate", "nll", "evaluate") for m in METHODS),
        "config-tiny-n4.yaml",
        "results-tiny-n4.md",
        "results-tiny-n4.json",
        "timings-tiny-n4.json",
    }
    assert [(r["split"], r["n"], r["max_samples"]) for r in subset] == [("test-n4", 4, 4)] * 3
    full_rows = json.loads((run_dir / "results-tiny.json").read_text())
    assert [r["n"] for r in full_rows] == [n] * 3
    lines = (run_dir / "generate" / "dep-test" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == n
    # the subset's predictions are the full run's first lines (same prompts and adapter)
    sub = (run_dir / "generate" / "dep-test-n4" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(x)["text"] for x in sub] == [json.loads(x)["text"] for x in lines[:4]]

    # max_samples at or above the split's size is the full split: nothing recomputes (the
    # run records its config and timings again)
    go(str(n))
    again = _digests(run_dir)
    assert {f: d for f, d in again.items() if f not in ("config.yaml", "timings-tiny.json")} == {
        f: d for f, d in after.items() if f not in ("config.yaml", "timings-tiny.json")
    }
