#!/usr/bin/env bash
# Make a local Debian 12 base image for the CPU variant of docker/Dockerfile, for machines that
# reach a Debian mirror but no container registry (tests/test_docker.py uses it).
#   sudo docker/make-cpu-base.sh [TAG] [MIRROR]        (CONTAINER=podman to use podman)
# Needs root, debootstrap and a Docker daemon or podman; about 2 minutes and 540 MB. It holds
# Python 3.11 (the cp311 wheels of the wheelhouse) and the libraries OpenCV loads.
set -euo pipefail

TAG=${1:-local/debian:bookworm-minbase-loce}
MIRROR=${2:-http://deb.debian.org/debian}
CONTAINER=${CONTAINER:-docker}
PACKAGES=python3,python3-venv,libgl1,libglib2.0-0,ca-certificates

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" > "$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log"; exit 1; }
tar -C "$rootfs" -c . | "$CONTAINER" import - "$TAG"
echo "$TAG"
