"""A container image made here, for hosts with no registry: busybox-static for the shell and
`busybox free` (sysinfo(2)), procps `free` and `ps` (from /proc) with their libraries. As a
rootfs tar (`docker import`, `podman import`) or an OCI image archive (`ctr image import`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

PROGRAMS = ("/usr/bin/free", "/usr/bin/ps")
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


class NoImage(Exception):
    """This host lacks what the image is made of."""


def _libraries(program: str) -> list[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            path = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):
            path = words[0]  # the dynamic loader
        else:
            continue
        if path.startswith("/"):
            libs.append(path)
    return libs


def _copy(src: str, root: Path) -> None:
    dest = root / src.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(src), dest)


def build_rootfs(root: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise NoImage("busybox is not installed")
    for d in ("bin", "usr/bin", "proc", "sys", "dev", "etc", "tmp", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(busybox), root / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    for program in PROGRAMS:
        if not os.path.exists(program):
            raise NoImage(f"{program} is not installed")
        _copy(program, root)
        for lib in _libraries(program):
            _copy(lib, root)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")


def rootfs_tar(dest: str) -> str:
    """A tar of the rootfs at `dest` (a file path)."""
    with tempfile.TemporaryDirectory(prefix="procfs-rootfs-") as d:
        build_rootfs(Path(d))
        with tarfile.open(dest, "w") as tar:
            for entry in sorted(os.listdir(d)):
                tar.add(os.path.join(d, entry), arcname=entry,
                        filter=lambda t: _owned_by_root(t))
    return dest


def rootfs_tar_or_skip(dest: str) -> str:
    """`rootfs_tar`, or the test skips where this host lacks what the image is made of."""
    try:
        return rootfs_tar(dest)
    except NoImage as e:
        pytest.skip(str(e))


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return digest, len(data)


def oci_archive(layer_tar: str, dest: str, name: str) -> str:
    """An OCI image layout (one uncompressed layer) as a tar, named `name` (a full reference,
    e.g. docker.io/library/x:latest) for `ctr image import`."""
    with open(layer_tar, "rb") as f:
        layer = f.read()
    with tarfile.open(dest, "w") as tar:
        layer_digest, layer_size = _blob(tar, layer)
        config = {"architecture": _goarch(), "os": "linux",
                  "config": {"Env": ENV, "Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
        config_digest, config_size = _blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }]}
        for fname, data in (("index.json", json.dumps(index).encode()),
                            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')):
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
