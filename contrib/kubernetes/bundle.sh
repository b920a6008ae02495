#!/bin/sh
# Assemble procfs with a Python and libraries of its own at PREFIX (/opt/procfs/current), so
# that one tree runs the daemon in the image and the OCI hook on any x86_64/arm64 Linux node,
# whatever the node has (the DaemonSet's init container copies it there: node-install.sh).
#   bundle.sh SRC [PREFIX]       run in the image's build stage (Containerfile), as root,
#                                 with python3, python3-venv, gcc, libfuse3-dev and patchelf
# - bin/python3: Debian's interpreter, its ELF interpreter and RPATH pointing into the tree, so
#   that it and every extension module it loads use the tree's glibc and libraries (RPATH, not
#   RUNPATH: the executable's RPATH also serves the libraries that extension modules need);
# - lib/python3.X: its standard library; lib/python3/dist-packages: procfs and its dependencies
#   (versions pinned in contrib/kubernetes/constraints.txt); lib/ld: every shared library all
#   of that links, with the dynamic loader;
# - bin/NAME: each console script the package declares, run with `python3 -I` (no environment
#   variable or user directory of the node's changes what it imports).
set -eu
src=$1
prefix=${2:-/opt/procfs/current}
py=$(readlink -f /usr/bin/python3)
ver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
mkdir -p "$prefix/bin" "$prefix/lib/ld" "$prefix/lib/python3/dist-packages"

cp "$py" "$prefix/bin/python3"
cp -a "/usr/lib/python$ver" "$prefix/lib/"
# what procfs never imports; sitecustomize is a link to /etc on Debian
for d in test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data sitecustomize.py \
        config-"$ver"-*; do
    rm -rf "$prefix/lib/python$ver/"$d
done

# A fixed place to build in, and no debugging information in what is compiled (it would name
# pip's random build directory): the same sources give the same files.
build=/tmp/procfs-bundle-build
rm -rf "$build"
python3 -m venv "$build/venv"
CFLAGS=-g0 "$build/venv/bin/pip" install --quiet --disable-pip-version-check --no-compile \
    --constraint "$src/contrib/kubernetes/constraints.txt" \
    --target "$prefix/lib/python3/dist-packages" "$src"
rm -rf "$prefix/lib/python3/dist-packages/bin" "$build"

# The libraries, the loader among them.
elves=$(find "$prefix/bin/python3" "$prefix/lib" -name '*.so*' -type f -o -path "$prefix/bin/python3")
for f in $elves; do
    ldd "$f" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'
done | sort -u | while read -r lib; do
    cp -L "$lib" "$prefix/lib/ld/"
done
loader=$(ls "$prefix"/lib/ld/ld-linux*)
# $ORIGIN: the libraries of the tree the executable was started from, even after the node's
# link /opt/procfs/current moved on to a newer tree (the loader's path must be absolute).
patchelf --set-interpreter "$loader" --force-rpath --set-rpath '$ORIGIN/../lib/ld' \
    "$prefix/bin/python3"

# What the init container installs on the node besides this tree.
mkdir -p "$prefix/share"
cp "$src/contrib/oci/hooks.d/procfs.json" "$src/contrib/kubernetes/node-install.sh" \
    "$prefix/share/"

# The commands, from the package's entry points.
"$prefix/bin/python3" -I - "$prefix" <<'EOF'
import os, sys
from importlib.metadata import distribution
prefix = sys.argv[1]
for ep in distribution("procfs").entry_points:
    if ep.group != "console_scripts":
        continue
    module, _, attr = ep.value.partition(":")
    path = os.path.join(prefix, "bin", ep.name)
    with open(path, "w") as f:
        f.write(f"#!{prefix}/bin/python3 -I\nimport sys\nfrom {module} import {attr}\n"
                f"sys.argv[0] = {ep.name!r}\nsys.exit({attr}())\n")
    os.chmod(path, 0o755)
EOF
# Bytecode compiled afresh for the whole tree (Debian compiles its own at install time, with
# marshal's output depending on the run), checked by the source's hash, not its time, and with
# one hash seed (set constants): the same sources give the same files.
find "$prefix/lib" -name __pycache__ -prune -exec rm -rf {} +
PYTHONHASHSEED=0 "$prefix/bin/python3" -s -m compileall -q -j1 \
    --invalidation-mode unchecked-hash "$prefix/lib"
# An identity for node-install.sh: the same tree gives the same name.
(cd "$prefix" && find . -type f ! -name BUILD ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum) \
    | sha256sum | cut -c1-16 > "$prefix/BUILD"
