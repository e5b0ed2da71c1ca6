"""A real run killed (SIGKILL) at several points, then resumed, ends with the same artifacts
as an uninterrupted run (issue 25's crash test)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_RUN, synthetic_overrides

# Written by stages that are under way at these moments: ingest done (benchmark being built),
# vectors being embedded, an epoch being trained, predictions being appended, scores due.
KILL_AT = [
    "prepare/raw/manifest.json",
    "embed",
    "train/dep/log.jsonl",
    "train/dep/epoch-1",
    "generate/dep-test-n4/predictions.jsonl",
    "evaluate",
]
ARTIFACTS = [
    "prepare/reviews.parquet",
    "prepare/samples.parquet",
    "embed/vectors.npy",
    "contrast/diff.npy",
    "train/dep/best/adapter.safetensors",
    "generate/nonperso-test-n4/predictions.jsonl",
    "generate/dep-test-n4/predictions.jsonl",
    "nll/dep-test-n4/nll.parquet",
    "evaluate/nonperso-test-n4/scores.parquet",
    "evaluate/dep-test-n4/scores.parquet",
]


def _cmd(run_dir, root, tiny_lm_dir, encoder_dir) -> list[str]:
    return [
        sys.executable,
        "-m",
        "peerdiff.cli",
        "run",
        *synthetic_overrides(root, run_dir),
        *TINY_RUN,
        f"llm.model={tiny_lm_dir}",
        "llm.threads=1",
        f"embed.model={encoder_dir}",
        f"cache_dir={run_dir / 'cache'}",
        "methods=[nonperso,dep]",
        "train.epochs=2",
        "probe.splits=[]",
    ]


@pytest.mark.slow
def test_kills_at_every_stage_resume_to_the_uninterrupted_artifacts(
    tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path
):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    clean = tmp_path / "clean"
    subprocess.run(_cmd(clean, synthetic_root, tiny_lm[2], tiny_encoder_dir), check=True, env=env)
    killed = tmp_path / "killed"
    cmd = _cmd(killed, synthetic_root, tiny_lm[2], tiny_encoder_dir)
    kills = []
    for marker in KILL_AT:
        if (killed / marker).exists():
            continue  # an earlier run got past this point before it was killed
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while p.poll() is None and not (killed / marker).exists() and time.time() < deadline:
            time.sleep(0.005)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills.append(marker)
        p.wait()
    assert len(kills) >= 3, kills  # the runs were really cut, at several stages
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    for f in ARTIFACTS:
        assert (clean / f).read_bytes() == (killed / f).read_bytes(), f
    leftovers = [p for p in killed.rglob("*.tmp") if "cache" not in p.parts]
    assert not leftovers, leftovers
