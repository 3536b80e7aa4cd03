#!/usr/bin/env bash
# A throw-away virtual environment with MultiVae 1.0.3 for `throughput.py --peer multivae` only.
# It sees the system site-packages (torch 2.13.0 CPU, crmvae) and pins torch, so nothing pulls
# the CUDA stack. multivae and pythae are installed without dependencies: their torchvision and
# `dataclasses` backport requirements are skipped (the benchmark supplies a stand-in torchvision,
# see benchmarks/peer_multivae.py); the dependencies they import are installed by hand.
#   usage: bash benchmarks/setup_peer.sh [VENV_DIR]    (default /tmp/peer-venv)
set -euo pipefail
VENV="${1:-/tmp/peer-venv}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv --system-site-packages "$VENV"
CONSTRAINTS="$VENV/peer-constraints.txt"
"$PYTHON" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$CONSTRAINTS"
"$VENV/bin/pip" install --no-deps multivae==1.0.3 pythae==0.1.2
"$VENV/bin/pip" install -c "$CONSTRAINTS" pandas nltk torchmetrics cloudpickle pydantic imageio
"$VENV/bin/python" - "$CONSTRAINTS" <<'PY'
import importlib.metadata as md
import sys

import torch

pinned = open(sys.argv[1]).read().strip().split("==")[1]
assert torch.__version__.split("+")[0] == pinned, f"torch was replaced: {torch.__version__} != {pinned}"
print("peer venv ready: multivae", md.version("multivae"), "torch", torch.__version__)
PY
echo "run: $VENV/bin/python benchmarks/throughput.py --peer multivae"
