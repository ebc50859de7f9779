#!/usr/bin/env bash
# Make a local stand-in for docker/Dockerfile's CUDA base
# (pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel) on machines that reach PyPI and a Debian mirror
# but no container registry, so that the CUDA image can be built there (docker/README.md says
# what that does and does not verify).
#   sudo docker/make-cuda-base.sh [TAG] [MIRROR]       (CONTAINER=podman to use podman)
# Needs root, debootstrap, curl, a Python 3.11 with pip, and docker or podman; about 8 minutes,
# and the image is 6.6 GB.
# Like the upstream image: a Python 3.11 with its headers and no venv around it (install.sh's venv
# sees its site-packages, as it sees conda's there) holding torch 2.6.0 (PyPI's build is the CUDA
# 12.4 one) and torchvision 0.21.0; g++; CUDA 12.4.1's compiler in /usr/local/cuda, with
# /usr/local/cuda/bin on PATH, where torch's extension builder looks for it (CUDA_HOME).
# Headers, libcudart, ptxas and NVVM come from PyPI's NVIDIA wheels: those torch installs, and
# nvcc's and CCCL's for 12.4. PyPI has no nvcc driver for CUDA 12 (the nvcc wheel holds ptxas and
# NVVM only), so nvcc, cicc, cudafe++, fatbinary, nvlink and cuobjdump come from Debian's package
# of CUDA 12.4.1, which ships NVIDIA's binaries (its ptxas is byte-identical to the wheel's).
set -euo pipefail

TAG=${1:-local/pytorch:2.6.0-cuda12.4-devel-loce}
MIRROR=${2:-http://deb.debian.org/debian}
CONTAINER=${CONTAINER:-docker}
PYTHON=${PYTHON:-python3}  # a Python 3.11 with pip: it downloads cp311 wheels
TORCH=(torch==2.6.0 torchvision==0.21.0)
CUDA_WHEELS=(nvidia-cuda-nvcc-cu12==12.4.131 nvidia-cuda-cccl-cu12==12.4.127.post1)
TOOLKIT_DEB=pool/non-free/n/nvidia-cuda-toolkit/nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb
TOOLKIT_SHA256=cd5fe85aee38d108b315f408a688641478f2402622a10c677478eb7a6c4e5319
PACKAGES=python3,python3-dev,python3-venv,python3-pip,g++,libgl1,libglib2.0-0,ca-certificates

work=$(mktemp -d)
rootfs=$work/rootfs
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" \
    > "$work/log" 2>&1 || { tail -20 "$work/log"; exit 1; }
curl -fsSL -o "$work/toolkit.deb" "$MIRROR/$TOOLKIT_DEB"
echo "$TOOLKIT_SHA256  $work/toolkit.deb" | sha256sum -c --quiet
dpkg-deb -x "$work/toolkit.deb" "$work/toolkit"

# Downloaded by the host's pip (set up for this machine's network), installed by the image's.
"$PYTHON" -m pip download -q -d "$rootfs/tmp/wheels" "${TORCH[@]}"
"$PYTHON" -m pip download -q --no-deps -d "$rootfs/tmp/wheels" "${CUDA_WHEELS[@]}"
in_root() { chroot "$rootfs" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root "$@"; }
pip_in_root() { in_root python3 -m pip install -q --no-index --find-links /tmp/wheels "$@"; }
pip_in_root --break-system-packages "${TORCH[@]}"
pip_in_root --no-deps --target /tmp/cuda "${CUDA_WHEELS[@]}"

# The upstream layout: /usr/local/cuda -> cuda-12.4, include/ and lib64/ under targets/.
cuda=$rootfs/usr/local/cuda-12.4
target=$cuda/targets/x86_64-linux
nvidia=$rootfs/usr/local/lib/python3.11/dist-packages/nvidia
extra=$rootfs/tmp/cuda/nvidia
mkdir -p "$cuda/bin" "$cuda/nvvm/bin" "$target/include" "$target/lib"
for include in "$nvidia"/*/include "$extra"/*/include; do
    cp -a "$include/." "$target/include/"
done
find "$target/include" \( -name __init__.py -o -name __pycache__ \) -prune -exec rm -rf {} +
cp -a "$extra/cuda_nvcc/bin/ptxas" "$cuda/bin/"
cp -a "$extra/cuda_nvcc/nvvm/"{include,lib64,libdevice} "$cuda/nvvm/"
cp -a "$nvidia/cuda_runtime/lib/libcudart.so.12" "$target/lib/"
ln -s libcudart.so.12 "$target/lib/libcudart.so"
cp -a "$work/toolkit/usr/lib/nvidia-cuda-toolkit/bin/"{nvcc,crt} "$cuda/bin/"
cp -a "$work/toolkit/usr/lib/nvidia-cuda-toolkit/bin/cicc" "$cuda/nvvm/bin/"
cp -a "$work/toolkit/usr/bin/"{cudafe++,fatbinary,nvlink,bin2c,cuobjdump} "$cuda/bin/"
cat > "$cuda/bin/nvcc.profile" <<'EOF'
TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES += "-I$(TOP)/$(_TARGET_DIR_)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/$(_TARGET_DIR_)/lib"
EOF
ln -s targets/x86_64-linux/include "$cuda/include"
ln -s targets/x86_64-linux/lib "$cuda/lib64"
ln -s cuda-12.4 "$rootfs/usr/local/cuda"
rm -rf "$rootfs/tmp/"{cuda,wheels} "$rootfs/var/cache/apt/archives/"*.deb

# The upstream image's environment, less what only its conda layout needs.
path=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
tar -C "$rootfs" -c . | "$CONTAINER" import \
    --change "ENV PATH=$path:/sbin:/bin" \
    --change 'ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64' \
    --change 'ENV NVIDIA_VISIBLE_DEVICES=all' \
    --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility' \
    --change 'ENV CUDA_VERSION=12.4.1' \
    - "$TAG"
echo "$TAG"
