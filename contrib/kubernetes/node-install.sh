#!/bin/sh
# The DaemonSet's init container: put the node's part of procfs on the node (the hooks that
# CRI-O runs there need it on the node itself, not in a pod).
# - the tree of /opt/procfs/current (procfs with its own Python: bundle.sh) into the node's
#   /opt/procfs/versions/BUILD, then the link /opt/procfs/current to it, swapped atomically:
#   a hook that runs meanwhile sees the old tree or the new one, whole;
# - the OCI hook (contrib/oci/hooks.d/procfs.json, naming that tree and the mountpoint) into
#   the node's hooks directory, where CRI-O (and podman) read it by default.
# Where the node's directories are mounted in this container (hostPath volumes):
#   NODE_PREFIX    (/host/opt/procfs)   the node's /opt/procfs
#   NODE_HOOKS_DIR (/host/hooks.d)      the node's /usr/share/containers/oci/hooks.d
#   MOUNTPOINT     (/var/lib/procfs)    the daemon's mount on the node
# Older versions are removed, but the one the link named before (a hook may still run it).
set -eu
tree=/opt/procfs/current
node=${NODE_PREFIX:-/host/opt/procfs}
hooks=${NODE_HOOKS_DIR:-/host/hooks.d}
mount=${MOUNTPOINT:-/var/lib/procfs}
build=$(cat "$tree/BUILD")

mkdir -p "$node/versions" "$hooks"
if [ ! -d "$node/versions/$build" ]; then
    rm -rf "$node/versions/.new"
    cp -a "$tree" "$node/versions/.new"
    mv "$node/versions/.new" "$node/versions/$build"
fi
previous=$(readlink "$node/current" 2>/dev/null || true)
ln -sfn "versions/$build" "$node/current.new"
mv -T "$node/current.new" "$node/current"
for v in "$node"/versions/*; do
    case "versions/${v##*/}" in
        "versions/$build"|"$previous") ;;
        *) rm -rf "$v" ;;
    esac
done

sed -e "s#/usr/local/bin/procfs#/opt/procfs/current/bin/procfs#" -e "s#/var/lib/procfs#$mount#" \
    "$tree/share/procfs.json" > "$hooks/.procfs.json.new"
mv "$hooks/.procfs.json.new" "$hooks/procfs.json"
echo "procfs: /opt/procfs/current -> versions/$build; hook $hooks/procfs.json"
