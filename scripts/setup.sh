#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies (idempotent).
# torch is installed first and pinned: on a CPU machine `torch==2.13.0` is the CPU build from
# this machine's wheel cache; a looser requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
echo "==> setting up .venv (first run: a few minutes; DALI and dlib's models are large)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
# The ge2e voice front-end uses only the pretrained weights file inside resemblyzer's wheel
# (s2f/models/ge2e.py: found with importlib, loaded with torch.load(weights_only=True), its code
# never imported). --no-deps: its declared dependencies (librosa + numba, the webrtcvad sdist
# that needs a C compiler, the old `typing` backport) are not needed for that.
.venv/bin/python -m pip install -q --no-deps "resemblyzer==0.1.4"
rm -f .venv/.installed-*
touch "$stamp"
echo "==> .venv ready"
