#!/bin/sh
# The image's base, from Debian's packages only: debootstrap's minbase of SUITE (bookworm) plus
# fuse3 (the DaemonSet's preStop runs fusermount3), as a tar that `podman import` or `docker
# import` makes an image of.
#   make-base.sh OUT.tar        as root, with debootstrap (apt-get install debootstrap)
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian; a fixed state of the
# archive, e.g. http://snapshot.debian.org/archive/debian/20250101T000000Z/, gives the same
# packages whenever it is run), SOURCE_DATE_EPOCH (the time every file gets; default: the
# repository's last commit).
# Files that only record when and where it was made (logs, apt's caches and lists, machine-id)
# are removed; the tar is sorted, with numeric owners and one mtime, so that the same packages
# give the same tar.
set -eu
out=$1
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}

work=$(mktemp -d /tmp/procfs-base-XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=fuse3 "$suite" "$work/root" "$mirror"
cd "$work/root"
rm -rf var/cache/apt/*.bin var/cache/apt/archives/*.deb var/lib/apt/lists/* var/log/* \
    var/cache/ldconfig/aux-cache tmp/* run/* etc/machine-id etc/hostname etc/resolv.conf \
    var/lib/dpkg/*-old etc/*-
: > etc/machine-id  # systemd-less: empty, as Debian's images ship it
tar --sort=name --numeric-owner --mtime="@$epoch" --clamp-mtime \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$out" .
