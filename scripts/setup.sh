#!/usr/bin/env bash
# Create .venv with the pinned stack. mmcv 2.1.0 has no wheel for our torch, so it is compiled
# once (~17 min on 2 cores) against the installed torch and kept in a wheelhouse keyed by
# mmcv, torch build, Python and arch; later runs install from there in seconds.
# Idempotent: when pyproject.toml and this script are unchanged it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
MMCV_VERSION=2.1.0
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WHEELHOUSE_ROOT=${LOCE_WHEELHOUSE:-$HOME/.cache/loce/wheelhouse}
STAMP="$VENV/.loce-setup-stamp"

say() { printf '[setup] %s\n' "$*"; }

want_stamp=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] && "$VENV/bin/python" -c 'import mmcv.ops, mmdet, loce' 2>/dev/null; then
    say "environment $VENV is up to date (stamp $want_stamp); nothing to do"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" -c scripts/constraints.txt; }
# On PATH, so that torch's extension builder finds the venv's ninja and compiles MAX_JOBS files at
# a time (without a ninja on PATH it compiles mmcv's ops one by one, silently).
export PATH="$(cd "$VENV" && pwd)/bin:$PATH"

say "build tools: setuptools<81 (mmcv's setup.py and mmengine's config loader import pkg_resources)"
pip install -q 'setuptools<81' wheel ninja numpy

say "installing $TORCH_SPEC first (mmcv compiles against it)"
pip install -q "$TORCH_SPEC"

torch_tag=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')
py_tag=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if [[ -n "${FORCE_CUDA:-}" ]] || { command -v nvcc >/dev/null && "$VENV/bin/python" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; }; then
    export FORCE_CUDA=1 ops=cuda
else
    export CUDA_VISIBLE_DEVICES= ops=cpu
fi
wheelhouse="$WHEELHOUSE_ROOT/mmcv-$MMCV_VERSION-torch-$torch_tag-$py_tag-$(uname -m)-$ops"
mkdir -p "$wheelhouse"
if ! compgen -G "$wheelhouse/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    say "building mmcv $MMCV_VERSION with compiled $ops ops into $wheelhouse"
    say "this takes about 17 minutes on 2 cores, once; later runs reuse the wheel"
    start=$SECONDS
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        pip wheel -q --no-build-isolation --no-deps --no-binary mmcv -w "$wheelhouse" "mmcv==$MMCV_VERSION"
    say "mmcv built in $((SECONDS - start)) s"
else
    say "reusing the mmcv wheel in $wheelhouse"
fi
pip install -q --no-index --no-deps --find-links "$wheelhouse" "mmcv==$MMCV_VERSION"

say "installing the project and its pinned dependencies (editable: the plug-in, the pipeline and dev extras)"
pip install -q --find-links "$wheelhouse" -e '.[pipeline,dev]'

"$VENV/bin/python" - <<'PY'
import mmcv, mmdet, mmengine, torch
from mmcv.ops import nms  # noqa: F401  (fails if the compiled ops are missing)
print(f'[setup] torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}')
PY
echo "$want_stamp" > "$STAMP"
say "done"
