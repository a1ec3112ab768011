# Sourced by the container scripts (and read by tests/container): which engine runs containers here,
# and, for podman/buildah, storage of their own in build/containers and the flags this kind of host
# needs. Exports CONTAINER_ENGINE, CONTAINERS_STORAGE_CONF (podman) and RUN_FLAGS.
if [ -z "${CONTAINER_ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then CONTAINER_ENGINE=docker
    elif command -v podman >/dev/null && command -v buildah >/dev/null; then CONTAINER_ENGINE=podman
    else
        echo "error: no container engine: install Docker, or buildah + podman (Debian: apt-get install buildah podman runc)" >&2
        exit 1
    fi
fi
export CONTAINER_ENGINE
if [ "$CONTAINER_ENGINE" = podman ]; then
    store="$(pwd)/build/containers"
    mkdir -p "$store"
    if [ ! -f "$store/storage.conf" ]; then
        printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' "$store" "$store" \
            > "$store/storage.conf"
    fi
    export CONTAINERS_STORAGE_CONF="$store/storage.conf"
    # runc (crun: "cgroups in hybrid mode not supported"); explicit ulimits (setrlimit needs
    # CAP_SYS_RESOURCE, which a rootful podman in a sandbox may lack).
    export RUN_FLAGS="--runtime runc --ulimit nofile=16384:16384 --ulimit nproc=16384:16384"
else
    export RUN_FLAGS=""
fi
