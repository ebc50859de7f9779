#!/usr/bin/env bash
# Run by docker/Dockerfile at build time, from /work with pyproject.toml present: installs the
# suite's pinned dependencies into /opt/venv.
# Same recipe as scripts/setup.sh (setuptools < 81, torch before mmcv, mmcv compiled against
# that torch), with two differences for an image: the base image's CUDA torch and torchvision
# are kept and pinned, so pip can never swap them; and mmcv's CUDA ops are compiled for the
# fixed TORCH_CUDA_ARCH_LIST, since no GPU is visible during a build.
set -euo pipefail

VENV=/opt/venv
MMCV_VERSION=2.1.0
WHEELHOUSE=/opt/wheelhouse
PINS=/opt/venv-pins.txt

say() { printf '[docker/install] %s\n' "$*"; }

# --system-site-packages: the venv sees the base image's torch and torchvision.
python3 -m venv --system-site-packages "$VENV"
py="$VENV/bin/python"
# On PATH, so that torch's extension builder finds the venv's ninja and compiles MAX_JOBS files at
# a time (without it, it compiles mmcv's ops one by one, silently).
export PATH="$VENV/bin:$PATH"
index_args=()
[[ "${WHEELHOUSE_ONLY:-0}" == 1 ]] && index_args=(--no-index)
: > "$PINS"
pip() {
    "$py" -m pip "$@" "${index_args[@]}" --find-links "$WHEELHOUSE" \
        -c scripts/constraints.txt -c "$PINS"
}

pip install -q 'setuptools<81' wheel ninja numpy
if [[ -n "${TORCH_SPEC:-}" ]]; then
    say "installing $TORCH_SPEC"
    pip install -q "$TORCH_SPEC"
fi
"$py" - > "$PINS" <<'PY'
from importlib import metadata
for name in ('torch', 'torchvision'):
    try:
        print(f'{name}=={metadata.version(name)}')
    except metadata.PackageNotFoundError:
        pass
PY
grep -q '^torch==' "$PINS" || { say "no torch in the base image and no TORCH_SPEC given"; exit 1; }
say "keeping $(tr '\n' ' ' < "$PINS")"

if compgen -G "$WHEELHOUSE/mmcv-$MMCV_VERSION-*.whl" > /dev/null; then
    say "mmcv $MMCV_VERSION from the wheelhouse"
else
    say "compiling mmcv $MMCV_VERSION (FORCE_CUDA=${FORCE_CUDA:-0}, TORCH_CUDA_ARCH_LIST='${TORCH_CUDA_ARCH_LIST:-}', MAX_JOBS=${MAX_JOBS:-})"
    start=$SECONDS
    MMCV_WITH_OPS=1 pip wheel -q --no-build-isolation --no-deps --no-binary mmcv \
        -w "$WHEELHOUSE" "mmcv==$MMCV_VERSION"
    say "mmcv compiled in $((SECONDS - start)) s; the wheel stays in $WHEELHOUSE for reuse"
fi
pip install -q "mmcv==$MMCV_VERSION"

say "installing the pinned dependencies of pyproject.toml (the plug-in and the pipeline)"
pip install -q '.[pipeline]'

FORCE_CUDA="${FORCE_CUDA:-0}" "$py" - <<'PY'
import os

import mmcv
import mmdet
import mmengine
import torch
from mmcv.ops import get_compiling_cuda_version, nms  # noqa: F401  (fails without compiled ops)

built_for = get_compiling_cuda_version()
if os.environ['FORCE_CUDA'] == '1' and built_for == 'not available':
    raise SystemExit('[docker/install] mmcv has no CUDA ops (a CPU wheel in docker/wheelhouse/?); '
                     'remove it or build with FORCE_CUDA=0')
print(f'[docker/install] torch {torch.__version__}, mmcv {mmcv.__version__} (ops for CUDA '
      f'{built_for}), mmengine {mmengine.__version__}, mmdet {mmdet.__version__}')
PY
