"""Every benchmark with its default sizes (``make bench``); each prints its own figures."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["contrast.py", "--sizes", "1e4,3e4,1e5,3e5,1e6", "--loop-max", "1e5"],
    ["generation.py"],
    ["training.py"],
    ["serve_load.py"],
    ["prepare_scale.py", "--sizes", "1e6,1e7"],
]

if __name__ == "__main__":
    for args in RUNS:
        print(f"\n=== {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], check=True)
