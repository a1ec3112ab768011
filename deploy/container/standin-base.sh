#!/usr/bin/env bash
# Make sure the base image of BentoML's generated Dockerfile, python:3.11-slim, is in the local
# container storage. It is pulled when the registry can be reached; where it cannot (a machine that
# reaches only the Debian and PyPI package archives), a stand-in is built from Debian packages with
# mmdebstrap and tagged with the same name, so that the generated Dockerfile uses it unchanged:
#   - Debian bookworm minbase + python3.11, pip, venv, ca-certificates (what python:3.11-slim has),
#   - /usr/local/bin/python{,3} and pip{,3} links (the Dockerfile and BentoML's entrypoint call them),
#   - no EXTERNALLY-MANAGED marker (python:3.11-slim has none; the Dockerfile runs `pip install uv`),
#   - no apt lists, docs or man pages (as in python:3.11-slim),
#   - the host's locally added CA certificates (/usr/local/share/ca-certificates), so that pip and uv
#     inside the build trust a TLS-intercepting proxy the host trusts.
# Usage: deploy/container/standin-base.sh ENGINE     (ENGINE: podman or docker)
set -euo pipefail
ENGINE=${1:-podman}
TAG=docker.io/library/python:3.11-slim
if "$ENGINE" image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image: $TAG is in the local storage"
    exit 0
fi
if timeout 60 "$ENGINE" pull -q "$TAG" >/dev/null 2>&1; then
    echo "base image: pulled $TAG"
    exit 0
fi
echo "base image: $TAG cannot be pulled here; building a stand-in from Debian packages (mmdebstrap)"
command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap not found: apt-get install mmdebstrap" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3.11,python3-pip,python3-venv,ca-certificates \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
    --customize-hook='[ ! -d /usr/local/share/ca-certificates ] || cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"' \
    --customize-hook='chroot "$1" update-ca-certificates' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='for n in python python3; do ln -sf /usr/bin/python3.11 "$1/usr/local/bin/$n"; done' \
    --customize-hook='for n in pip pip3; do ln -sf /usr/bin/pip3 "$1/usr/local/bin/$n"; done' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$work/rootfs.tar"
"$ENGINE" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$work/rootfs.tar" "$TAG" >/dev/null
echo "base image: built and tagged the stand-in $TAG ($("$ENGINE" image inspect --format '{{.Size}}' "$TAG") bytes)"
