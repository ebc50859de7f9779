#!/usr/bin/env bash
# The prepared GPU check (benchmarks/README.md, "GPU check"): one command for a machine with a CUDA
# GPU, a CUDA build of torch, nvcc, 16 cores and no internet. It
#   1. installs the kit that scripts/gpu_check_wheels.sh assembled in work/gpu_check/ (carried),
#   2. builds mmcv 2.1.0's ops (CPU and CUDA) in place, for this GPU's architecture only, on all
#      cores (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability),
#   3. runs benchmarks/gpu_check.py, whose JSON summary it prints last and leaves in $OUT.
# State (installed packages, mmcv's build) lives in work/gpu_check_state/, which is not carried:
# a rerun on the same warm machine skips the install and resumes an unfinished build. The build
# stops in time for step 3 (GPU_CHECK_BUDGET_S in all); if it had to stop, rerun the same call.
# Environment: GPU_CHECK_PYTHON (python3), GPU_CHECK_STEPS ("install build run"), GPU_CHECK_ARCH
# (e.g. 9.0, to build without a GPU), GPU_CHECK_STATE, GPU_CHECK_KIT, MAX_JOBS, CUDA_HOME, OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PY=${GPU_CHECK_PYTHON:-python3}
KIT=${GPU_CHECK_KIT:-work/gpu_check}
STATE=${GPU_CHECK_STATE:-work/gpu_check_state}
STEPS=${GPU_CHECK_STEPS:-install build run}
BUDGET=${GPU_CHECK_BUDGET_S:-540}  # the whole command; the device call's timeout_s is 570
RUN_RESERVE=${GPU_CHECK_RUN_RESERVE_S:-100}  # step 3 on an H200: about a minute (estimated)
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
OUT=${OUT:-$STATE/out}
mkdir -p "$OUT"
SITE=$STATE/site
MMCV_SRC=$STATE/mmcv-2.1.0
SUMMARY=$OUT/gpu_check.json

say() { printf '[gpu_check %3ds] %s\n' "$SECONDS" "$*" >&2; }
# A summary for a stop before step 3 finished: the stage, why, and the end of its log.
fail() {
    local stage=$1 message=$2 log=${3:-}
    say "FAILED in $stage: $message"
    "$PY" - "$stage" "$message" "$log" "$SECONDS" > "$SUMMARY" <<'PY'
import json, os, sys
stage, message, log, elapsed = sys.argv[1:]
tail = open(log, errors='replace').read().splitlines()[-60:] if log and os.path.exists(log) else []
print(json.dumps(dict(status='failed', stage=stage, message=message, elapsed_s=int(elapsed),
                      log_tail=tail), indent=1))
PY
    cat "$SUMMARY"
    exit 1
}
wants() { [[ " $STEPS " == *" $1 "* ]]; }
timed_out() { (( $1 == 124 || $1 == 137 )); }

# ninja (the image has it as a pip package) is found through PATH by torch's extension builder.
PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PYTHONPATH="$MMCV_SRC:$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if wants install; then
    [[ -f "$KIT/SHA256SUMS" ]] \
        || fail install "no kit in $KIT: run scripts/gpu_check_wheels.sh where PyPI is reachable"
    (cd "$KIT" && sha256sum --quiet -c SHA256SUMS) > "$OUT/install.log" 2>&1 \
        || fail install "the kit in $KIT does not match its SHA256SUMS" "$OUT/install.log"
    stamp=$(sha256sum "$KIT/SHA256SUMS" | cut -c1-16)
    if [[ "$(cat "$SITE/.kit" 2>/dev/null)" == "$stamp" ]]; then
        say "packages already installed in $SITE (kit $stamp)"
    else
        say "installing $(ls "$KIT"/wheels/*.whl | wc -l) wheels into $SITE"
        rm -rf "$SITE.tmp"
        "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
            --no-cache-dir --target "$SITE.tmp" "$KIT"/wheels/*.whl >> "$OUT/install.log" 2>&1 \
            || fail install "pip install of the kit's wheels failed" "$OUT/install.log"
        echo "$stamp" > "$SITE.tmp/.kit"
        rm -rf "$SITE" && mv "$SITE.tmp" "$SITE"
    fi
    if [[ ! -d "$MMCV_SRC" ]]; then
        tar -C "$STATE" -xzf "$KIT"/src/mmcv-2.1.0.tar.gz \
            || fail install "cannot unpack the mmcv sdist"
    fi
    # Python.h: the image's, else the carried 3.12 headers (gcc and nvcc's host pass read CPATH).
    include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if [[ ! -f "$include/Python.h" ]]; then
        tar -C "$STATE" -xzf "$KIT/python3.12-include.tar.gz" \
            || fail install "cannot unpack the Python headers"
        say "no Python.h in $include: using the carried headers"
    fi
fi
[[ -f "$STATE/python3.12/Python.h" ]] && export CPATH="$STATE/python3.12${CPATH:+:$CPATH}"

if wants build; then
    arch=${GPU_CHECK_ARCH:-$("$PY" -c 'import torch
assert torch.cuda.is_available(), "torch sees no GPU"
print("%d.%d" % torch.cuda.get_device_capability())' 2> "$OUT/build.log")} \
        || fail build "cannot read the GPU's capability (GPU_CHECK_ARCH builds without a GPU)" \
                "$OUT/build.log"
    if [[ -z "${CUDA_HOME:-}" ]]; then
        nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null) \
            || fail build "no nvcc on PATH or in /usr/local/cuda; set CUDA_HOME"
        export CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
    fi
    jobs=${MAX_JOBS:-$(nproc)}
    torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
    key="mmcv 2.1.0, torch $torch_version, arch $arch, $("$CUDA_HOME/bin/nvcc" --version | tail -1)"
    if [[ "$(cat "$MMCV_SRC/.built" 2>/dev/null)" == "$key" ]] \
            && compgen -G "$MMCV_SRC/mmcv/_ext*.so" > /dev/null; then
        say "mmcv ops already built ($key)"
        reused=true seconds=0
    else
        left=$(( BUDGET - RUN_RESERVE - SECONDS ))
        (( left > 30 )) || fail build "no time left to build (${left}s)"
        say "building mmcv ops: $key, CUDA_HOME=$CUDA_HOME, $jobs jobs, at most ${left}s"
        start=$SECONDS
        # CFLAGS: Python's own add -g, which made each C++ file take 2.7 times the CPU time
        # (measured on roi_align.cpp); setuptools then uses these instead. .cu files have no -g.
        (cd "$MMCV_SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" \
            MAX_JOBS="$jobs" CFLAGS='-O3 -DNDEBUG -g0' timeout -k 10 "$left" \
            "$PY" setup.py build_ext --inplace) >> "$OUT/build.log" 2>&1
        rc=$?
        seconds=$(( SECONDS - start )) reused=false
        why="build stopped after ${seconds}s to leave time for the check; rerun the same call"
        why+=" at once: the warm machine keeps $STATE and the build resumes"
        timed_out $rc && fail build "$why" "$OUT/build.log"
        (( rc == 0 )) || fail build "mmcv build failed (exit $rc)" "$OUT/build.log"
        echo "$key" > "$MMCV_SRC/.built"
        say "mmcv ops built in ${seconds}s"
    fi
    "$PY" - "$STATE/build.json" "$arch" "$jobs" "$seconds" "$reused" "$CUDA_HOME" "$key" \
        "$MMCV_SRC/build" <<'PY'
import json, sys
path, arch, jobs, seconds, reused, cuda_home, key, build_dir = sys.argv[1:]
json.dump(dict(arch=arch, jobs=int(jobs), seconds=int(seconds), reused=reused == 'true',
               cuda_home=cuda_home, key=key, build_dir=build_dir), open(path, 'w'), indent=1)
PY
fi

if wants run; then
    left=$(( BUDGET - SECONDS ))
    say "running benchmarks/gpu_check.py (at most ${left}s)"
    timeout -k 10 "$left" "$PY" benchmarks/gpu_check.py --device cuda --work-dir "$STATE/run" \
        --build-info "$STATE/build.json" --out "$SUMMARY" > /dev/null 2> "$OUT/run.log"
    rc=$?
    timed_out $rc && fail run "benchmarks/gpu_check.py ran past its ${left}s" "$OUT/run.log"
    (( rc == 0 )) || fail run "benchmarks/gpu_check.py failed (exit $rc)" "$OUT/run.log"
    tail -n 30 "$OUT/run.log" >&2
    cat "$SUMMARY"
fi
