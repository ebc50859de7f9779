#!/usr/bin/env bash
# Assemble the kit that scripts/gpu_check.sh installs on a GPU machine without internet, into one
# git-ignored folder (default work/gpu_check/) that the device call carries:
#   wheels/       CPython 3.12 manylinux x86-64 wheels of what that machine's image lacks
#   src/          the mmcv 2.1.0 sdist (its ops are compiled there, for the GPU present)
#   python3.12-include.tar.gz   Python 3.12 C headers, used only if the image has no Python.h
#   carried.txt   the pins below; image.txt the packages the image already has (not carried)
#   SHA256SUMS    checked before anything is installed
# The image (the device notes' KINDS.md, read 2026-11-17) has Python 3.12.3, torch 2.11.0+cu130,
# nvcc 13.0, numpy 2.5.2, scipy, matplotlib, opencv-python-headless, pyyaml, rich, tqdm, six,
# pillow, attrs, packaging, setuptools of its own version, ninja, psutil. Versions here are the
# project's pins (pyproject.toml, scripts/constraints.txt) where it has them, else the latest.
# Needs pip, network access to PyPI and a python3.12 (for the headers; GPU_CHECK_NO_HEADERS=1
# makes a kit without them, for tests where there is none). Rebuilds atomically.
set -euo pipefail
cd "$(dirname "$0")/.."

KIT=${GPU_CHECK_KIT:-work/gpu_check}
PY=${PYTHON:-python3}
PY312=${PY312:-}
LIMIT_MIB=${GPU_CHECK_KIT_LIMIT_MIB:-32}  # the device call carries 64 MiB with the working tree

CARRIED=(
    mmengine==0.10.7
    mmdet==3.3.0
    faster-coco-eval==1.8.0
    pycocotools==2.0.11
    lvis==0.5.3                    # mmdet's LVISV1Dataset loads annotations with it
    setuptools==80.10.2            # < 81: mmcv's setup.py, mmengine's configs use pkg_resources
    addict==2.4.0                  # mmengine's
    termcolor==3.3.0
    yapf==0.43.0
    platformdirs==4.14.9           # yapf's
    shapely==2.2.0                 # mmdet's
    terminaltables==3.1.10
    jsonschema==4.26.0             # pipeline.matrix (imported by pipeline.runconfig)
    jsonschema-specifications==2025.9.1
    referencing==0.37.0
    rpds-py==2026.9.1
)
MMCV=mmcv==2.1.0
# The image's packages as KINDS.md lists them (read 2026-11-17), versions where it gives one.
IMAGE=(
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
    meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
    narwhals networkx ninja numba numba-cuda numpy==2.5.2 numpyro nvidia-cublas
    nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
    nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
    nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
    onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
    pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
    sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
    statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
    tifffile tiktoken timm tokenizers toolz torch==2.11.0 torchaudio torchdiffeq torch-geometric
    torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
    typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
)

say() { printf '[gpu_check_wheels] %s\n' "$*"; }
is_312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }
if [[ -z "$PY312" ]]; then
    for candidate in python3.12 /root/.pyenv/versions/3.12.*/bin/python3.12 /usr/bin/python3.12; do
        is_312 "$candidate" && { PY312=$candidate; break; }
    done
fi
if [[ -z "$PY312" ]] || ! is_312 "$PY312"; then
    if [[ -z "${GPU_CHECK_NO_HEADERS:-}" ]]; then
        say "no working python3.12 (set PY312=/path/to/python3.12): it provides the C headers"
        exit 1
    fi
    say "GPU_CHECK_NO_HEADERS: a kit without Python headers, for tests only"
    PY312=
fi

tmp="$KIT.tmp-$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/wheels" "$tmp/src"

say "downloading ${#CARRIED[@]} wheels for CPython 3.12, manylinux x86-64"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$tmp/wheels" "${CARRIED[@]}"

# pip prepares an sdist's metadata by running its setup.py in an isolated build environment;
# mmcv's imports pkg_resources, so that environment needs setuptools < 81 (the constraints file).
say "downloading the $MMCV sdist"
PIP_CONSTRAINT="$PWD/scripts/constraints.txt" "$PY" -m pip download -q --disable-pip-version-check \
    --no-deps --no-binary :all: -d "$tmp/src" "$MMCV"

if [[ -n "$PY312" ]]; then
    include=$("$PY312" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [[ -f "$include/Python.h" ]] || { say "$PY312 has no Python.h in $include"; exit 1; }
    version=$("$PY312" -c 'import platform; print(platform.python_version())')
    say "packing the C headers of Python $version"
    tar -C "$(dirname "$include")" -czf "$tmp/python3.12-include.tar.gz" "$(basename "$include")"
fi

printf '%s\n' "${CARRIED[@]}" "$MMCV" > "$tmp/carried.txt"
printf '%s\n' "${IMAGE[@]}" > "$tmp/image.txt"
(cd "$tmp" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort \
    | xargs sha256sum > SHA256SUMS)

count=$(find "$tmp/wheels" -name '*.whl' | wc -l)
[[ "$count" -eq "${#CARRIED[@]}" ]] || { say "expected ${#CARRIED[@]} wheels, got $count"; exit 1; }
size=$(du -sb "$tmp" | cut -f1)
if (( size > LIMIT_MIB * 1024 * 1024 )); then
    say "kit is $size bytes, over ${LIMIT_MIB} MiB"
    exit 1
fi

rm -rf "$KIT.old"
[[ -e "$KIT" ]] && mv "$KIT" "$KIT.old"
mv "$tmp" "$KIT"
rm -rf "$KIT.old"
trap - EXIT
mib=$(awk "BEGIN {printf \"%.1f\", $size / 1048576}")
say "kit ready in $KIT: $count wheels, the mmcv sdist${PY312:+ and Python headers}, $mib MiB"
