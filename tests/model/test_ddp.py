"""Two CPU processes train one adapter with DDP (gloo) through accelerate.

On GPUs the command is `accelerate launch --multi_gpu --num_processes N peerdiff train ...`;
`accelerate launch --cpu` starts only one process (multi-CPU needs MPI), so this test starts
the two processes with torchrun, and the trainer's `Accelerator()` picks gloo."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_training_keeps_replicas_identical(tmp_path):
    pytest.importorskip("accelerate")
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    script = Path(__file__).with_name("ddp_train.py")
    r = subprocess.run(
        [launcher, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    h0, h1 = (tmp_path / "rank0.txt").read_text(), (tmp_path / "rank1.txt").read_text()
    assert h0 == h1  # DDP kept both replicas identical
    state = json.loads((tmp_path / "train" / "state.json").read_text())
    assert [e["processes"] for e in state["epochs"]] == [2, 2]
    assert (tmp_path / "train" / "best" / "adapter.safetensors").exists()
    log = (tmp_path / "train" / "log.jsonl").read_text().splitlines()
    assert len(log) == 2 * 2  # 8 examples / batch 2 / 2 processes, per epoch, main only
