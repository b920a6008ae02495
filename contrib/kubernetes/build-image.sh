#!/bin/sh
# Build the DaemonSet's image from this repository: localhost/procfs:VERSION.
#   contrib/kubernetes/build-image.sh [podman|docker]      (as root, from anywhere)
# 1. the base, localhost/procfs-base:SUITE, unless the tool has it: make-base.sh (debootstrap)
#    or the tar in BASE_TAR, imported;
# 2. contrib/kubernetes/Containerfile, with the repository as context.
# Environment: BASE_TAR, SUITE, MIRROR, SOURCE_DATE_EPOCH (make-base.sh), TOOL_ARGS (options
# for the tool, before the subcommand: e.g. podman's --root, or `--runtime runc` where crun
# cannot run, as on hybrid cgroup hosts), BUILD_ARGS (more options for `build`), IMAGE
# (localhost/procfs:VERSION).
set -eu
tool=${1:-podman}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=${SUITE:-bookworm}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
base=localhost/procfs-base:$suite
image=${IMAGE:-localhost/procfs:$version}
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
run() { $tool ${TOOL_ARGS:-} "$@"; }

if ! run image inspect "$base" >/dev/null 2>&1; then
    tar=${BASE_TAR:-}
    if [ -z "$tar" ]; then
        tar=$(mktemp /tmp/procfs-base-XXXXXX.tar)
        trap 'rm -f "$tar"' EXIT
        SOURCE_DATE_EPOCH=$epoch "$here/make-base.sh" "$tar"
    fi
    run import --change 'CMD ["/bin/sh"]' "$tar" "$base"
fi
timestamp=
[ "$tool" = podman ] && timestamp="--timestamp $epoch"
run build --network host $timestamp ${BUILD_ARGS:-} --build-arg "BASE=$base" \
    -f "$here/Containerfile" -t "$image" "$repo"
echo "$image"
