#!/usr/bin/env python3
"""`make install` / `make uninstall`: procfs in a virtual environment of its own, its commands in
BINDIR, and every contrib file where its runtime reads it, with the paths inside rewritten to
where things were installed. Standard library only: it runs with the system's python3, before
anything of procfs is installed.

Where things go (docs/install.md has the table):
- under PREFIX: the virtual environment (LIBDIR = PREFIX/lib/procfs), a link in BINDIR for each
  console script the package declares, the LXC mount hook (DATADIR = PREFIX/share/procfs), the
  containerd snippet (an example: containerd 1.6 reads only its own config.toml), the
  documentation (DOCDIR = PREFIX/share/doc/procfs), and the systemd unit in PREFIX/lib/systemd/
  system, which systemd searches for PREFIX /usr/local and /usr (any other PREFIX: /etc/systemd/
  system);
- at the fixed paths the runtimes read whatever PREFIX is: the OCI hook in /usr/share/containers/
  oci/hooks.d (podman's and CRI-O's default hooks_dir), the LXC snippet in /usr/share/lxc/config/
  common.conf.d, and the CRI-O runtime in /etc/crio/crio.conf.d (only when the package declares
  `procfs-runc`: CRI-O refuses to start on a runtime_path that does not exist).
DESTDIR is a staging root prefixed to every path written, both kinds; never to the paths written
inside files or link targets, which are where things will be once DESTDIR is copied to /.

Every path created (files, links, directories that did not exist, the virtual environment as one
tree) goes into a manifest, DATADIR/install-manifest.txt; `uninstall` removes exactly those.
`install` refuses to replace a file it did not create (--force to take it over). Installing
again over an install upgrades it in place (the virtual environment is kept and the package
reinstalled, so `procfs reload` puts the new code into service) and removes what the new install
no longer has.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]
CONTRIB = SRC / "contrib"

# The defaults written in contrib/ (PREFIX=/usr/local), and what install replaces them with.
DEFAULT_PREFIX = "/usr/local"
DEFAULT_MOUNTPOINT = "/var/lib/procfs"

HOOKS_DIR = "/usr/share/containers/oci/hooks.d"
LXC_CONF_DIR = "/usr/share/lxc/config/common.conf.d"
CRIO_CONF_DIR = "/etc/crio/crio.conf.d"
WRAPPER = "procfs-runc"  # the wrapper runtime's command, when the package declares it
SYSTEMD_PREFIXES = ("/usr", "/usr/local")  # whose lib/systemd/system systemd searches

# What is not the package's source: left out of the copy pip builds from.
NOT_SOURCES = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
               "results", "wheels")
MANIFEST = "install-manifest.txt"
# Manifest lines: "<kind> <path>", in the order made. f: a file, l: a link, d: a directory
# made by install (removed when empty), t: a tree wholly ours (the virtual environment: removed
# with whatever its programs wrote into it since, e.g. bytecode caches).
KINDS = ("f", "l", "d", "t")


class InstallError(Exception):
    """A one-line reason install or uninstall stopped."""


@dataclass(frozen=True)
class Layout:
    prefix: str = DEFAULT_PREFIX
    destdir: str = ""
    mountpoint: str = DEFAULT_MOUNTPOINT
    hooks_dir: str = HOOKS_DIR
    lxc_conf_dir: str = LXC_CONF_DIR
    crio_conf_dir: str = CRIO_CONF_DIR
    unit_dir: str = ""  # "" : PREFIX/lib/systemd/system or /etc/systemd/system (see above)

    @property
    def bindir(self) -> str:
        return f"{self.prefix}/bin"

    @property
    def libdir(self) -> str:
        return f"{self.prefix}/lib/procfs"

    @property
    def datadir(self) -> str:
        return f"{self.prefix}/share/procfs"

    @property
    def docdir(self) -> str:
        return f"{self.prefix}/share/doc/procfs"

    @property
    def systemd_dir(self) -> str:
        if self.unit_dir:
            return self.unit_dir
        if self.prefix in SYSTEMD_PREFIXES:
            return f"{self.prefix}/lib/systemd/system"
        return "/etc/systemd/system"

    @property
    def manifest(self) -> str:
        return f"{self.datadir}/{MANIFEST}"

    def staged(self, path: str) -> Path:
        """Where `path` (as installed) is written: under DESTDIR."""
        return Path(self.destdir + path) if self.destdir else Path(path)

    def rewrites(self) -> list[tuple[str, str]]:
        """contrib's default paths → the installed ones (longest first: docdir before bindir's
        /usr/local/share/...)."""
        d = DEFAULT_PREFIX
        pairs = [(f"{d}/share/doc/procfs", self.docdir), (f"{d}/share/procfs", self.datadir),
                 (f"{d}/lib/procfs", self.libdir), (f"{d}/bin/procfs", f"{self.bindir}/procfs"),
                 (DEFAULT_MOUNTPOINT, self.mountpoint)]
        return [(old, new) for old, new in pairs if old != new]


@dataclass(frozen=True)
class Item:
    """One contrib file and where it goes."""

    source: str  # relative to the repository
    dest: str  # the installed path
    mode: int = 0o644


def items(layout: Layout, scripts: list[str]) -> list[Item]:
    """Every file install copies (besides the virtual environment and the links), given the
    console scripts the package declares."""
    found = [
        Item("contrib/oci/hooks.d/procfs.json", f"{layout.hooks_dir}/procfs.json"),
        Item("contrib/systemd/procfs.service", f"{layout.systemd_dir}/procfs.service"),
        Item("contrib/systemd/procfs-keeper.service",
             f"{layout.systemd_dir}/procfs-keeper.service"),
        Item("contrib/lxc/lxc.mount.hook", f"{layout.datadir}/lxc.mount.hook", 0o755),
        Item("contrib/lxc/00-procfs.conf", f"{layout.lxc_conf_dir}/00-procfs.conf"),
        Item("README.md", f"{layout.docdir}/README.md"),
        Item("docs/install.md", f"{layout.docdir}/install.md"),
    ]
    if WRAPPER in scripts:
        found += [Item("contrib/crio/10-procfs.conf", f"{layout.crio_conf_dir}/10-procfs.conf"),
                  Item("contrib/containerd/procfs.toml", f"{layout.datadir}/containerd.toml")]
    return found


def rewrite(text: str, layout: Layout) -> str:
    for old, new in layout.rewrites():
        text = text.replace(old, new)
    return text


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """The manifest's (kind, path) entries; [] when there is none."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        kind, _, name = line.partition(" ")
        if kind not in KINDS or not name.startswith("/"):
            raise InstallError(f"{path}: not a manifest line: {line!r}")
        entries.append((kind, name))
    return entries


@dataclass
class Installer:
    layout: Layout
    force: bool = False
    made: list[tuple[str, str]] = field(default_factory=list)  # this install's manifest
    owned: set[str] = field(default_factory=set)  # paths of the previous install

    def note(self, kind: str, path: str) -> None:
        if (kind, path) not in self.made:
            self.made.append((kind, path))

    def mkdirs(self, path: str) -> None:
        """Make `path` and its missing parents, noting those made (and those a previous install
        made, which are still ours)."""
        missing = []
        p = path
        while p not in ("/", "") and (not self.layout.staged(p).exists() or p in self.owned):
            missing.append(p)
            p = os.path.dirname(p)
        for d in reversed(missing):
            self.layout.staged(d).mkdir(mode=0o755, exist_ok=True)
            self.note("d", d)

    def claim(self, path: str) -> None:
        """Refuse to replace what install did not make."""
        staged = self.layout.staged(path)
        if (staged.exists() or staged.is_symlink()) and path not in self.owned and not self.force:
            raise InstallError(f"{staged} exists and was not installed by procfs: remove it, or "
                               "install with FORCE=1 to take it over")

    def write(self, path: str, data: bytes, mode: int) -> None:
        self.claim(path)
        self.mkdirs(os.path.dirname(path))
        staged = self.layout.staged(path)
        tmp = staged.with_name(f".{staged.name}.procfs-new")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, staged)  # a runtime reading it meanwhile sees the old or the new file
        self.note("f", path)

    def link(self, path: str, target: str) -> None:
        self.claim(path)
        self.mkdirs(os.path.dirname(path))
        staged = self.layout.staged(path)
        tmp = staged.with_name(f".{staged.name}.procfs-new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, staged)
        self.note("l", path)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, check=False)
    if done.returncode != 0:
        raise InstallError(f"{' '.join(argv)} failed (exit {done.returncode})")


def make_venv(inst: Installer, python: str) -> list[str]:
    """The virtual environment with the package in it; the console scripts it declares."""
    layout = inst.layout
    venv = layout.staged(layout.libdir)
    inst.claim(layout.libdir)
    if not (venv / "bin" / "python").exists():
        inst.mkdirs(os.path.dirname(layout.libdir))
        _run([python, "-m", "venv", str(venv)])
    inst.note("t", layout.libdir)
    vpy = str(venv / "bin" / "python")
    # Bytecode compiled under DESTDIR would name the staging paths in tracebacks: compiled
    # below instead, with the installed paths.
    compile_flag = ["--no-compile"] if layout.destdir else []
    # From a clean copy: setuptools builds in the source tree and keeps its build/lib from one
    # build to the next, so a module removed (or made a package) would still be installed.
    with tempfile.TemporaryDirectory(prefix="procfs-install-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(SRC, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
        _run([vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--no-warn-script-location", *compile_flag, "--upgrade", str(src)])
    if layout.destdir:
        relocate(venv, layout)
    out = subprocess.run(
        [vpy, "-c", "import importlib.metadata as m; print('\\n'.join(sorted(e.name for e in "
         "m.distribution('procfs').entry_points if e.group == 'console_scripts')))"],
        check=True, capture_output=True, text=True).stdout
    return out.split()


def relocate(venv: Path, layout: Layout) -> None:
    """A virtual environment made under DESTDIR names that path in its scripts' #! lines, its
    activate scripts and pyvenv.cfg: make them name the installed path."""
    staged, final = str(venv), layout.libdir
    for f in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if f.is_symlink() or not f.is_file():
            continue
        data = f.read_bytes()
        if staged.encode() in data:
            mode = f.stat().st_mode
            f.write_bytes(data.replace(staged.encode(), final.encode()))
            f.chmod(mode)
    compileall.compile_dir(str(venv / "lib"), quiet=1, stripdir=layout.destdir,
                           prependdir="/", force=True, workers=1)


def install(layout: Layout, python: str, force: bool = False) -> list[tuple[str, str]]:
    manifest = layout.staged(layout.manifest)
    previous = read_manifest(manifest)
    inst = Installer(layout, force, owned={p for _, p in previous})
    try:
        # The files first: a conflict stops install before it built anything.
        for item in items(layout, []):
            inst.claim(item.dest)
        inst.claim(f"{layout.bindir}/procfs")
        scripts = make_venv(inst, python)
        for name in scripts:
            inst.link(f"{layout.bindir}/{name}", f"{layout.libdir}/bin/{name}")
        for item in items(layout, scripts):
            text = rewrite((SRC / item.source).read_text(), layout)
            inst.write(item.dest, text.encode(), item.mode)
    finally:
        # Even after a failure: what was made is in the manifest, so uninstall removes it.
        if inst.made:
            inst.mkdirs(os.path.dirname(layout.manifest))
            current = {p for _, p in inst.made}
            stale = [(k, p) for k, p in previous if p not in current]
            remove(layout, [e for e in stale if e[0] != "d"])
            remove(layout, [e for e in stale if e[0] == "d"])  # those emptied above
            for kind, path in stale:  # made by us, still holding another's file: still ours
                if kind == "d" and layout.staged(path).is_dir():
                    inst.note(kind, path)
            body = "".join(f"{k} {p}\n" for k, p in inst.made if p != layout.manifest)
            manifest.write_text(body + f"f {layout.manifest}\n")
    return inst.made


def remove(layout: Layout, entries: list[tuple[str, str]]) -> list[str]:
    """Remove the entries' paths (files and trees, then directories deepest first, each only
    when empty); the directories left because something else is in them."""
    left = []
    for kind, path in reversed(entries):
        staged = layout.staged(path)
        if kind == "t":
            shutil.rmtree(staged, ignore_errors=True)
        elif kind in ("f", "l"):
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
    for path in sorted((p for k, p in entries if k == "d"), key=len, reverse=True):
        staged = layout.staged(path)
        try:
            staged.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(str(staged))
    return left


def uninstall(layout: Layout) -> list[str]:
    manifest = layout.staged(layout.manifest)
    entries = read_manifest(manifest)
    if not entries:
        raise InstallError(f"nothing to uninstall: no {manifest} (install with the same PREFIX "
                           "and DESTDIR)")
    return remove(layout, entries)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except InstallError as e:
        print(f"procfs install: {e}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["install", "uninstall", "show"])
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--destdir", default="")
    p.add_argument("--mountpoint", default=DEFAULT_MOUNTPOINT,
                   help="where the server mounts its tree (the unit, the hooks)")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter of the virtual environment (default: this one)")
    p.add_argument("--hooks-dir", default=HOOKS_DIR)
    p.add_argument("--lxc-conf-dir", default=LXC_CONF_DIR)
    p.add_argument("--crio-conf-dir", default=CRIO_CONF_DIR)
    p.add_argument("--unit-dir", default="")
    p.add_argument("--force", action="store_true", help="take over files procfs did not install")
    args = p.parse_args(argv)
    for name in ("prefix", "mountpoint", "hooks_dir", "lxc_conf_dir", "crio_conf_dir"):
        if not os.path.isabs(getattr(args, name)):
            p.error(f"--{name.replace('_', '-')} must be an absolute path")
    layout = Layout(prefix=args.prefix.rstrip("/") or "/", destdir=args.destdir.rstrip("/"),
                    mountpoint=args.mountpoint.rstrip("/"), hooks_dir=args.hooks_dir,
                    lxc_conf_dir=args.lxc_conf_dir, crio_conf_dir=args.crio_conf_dir,
                    unit_dir=args.unit_dir)
    with _errors():
        if args.action == "show":
            print(json.dumps({"bindir": layout.bindir, "libdir": layout.libdir,
                              "datadir": layout.datadir, "docdir": layout.docdir,
                              "unitdir": layout.systemd_dir, "hooksdir": layout.hooks_dir,
                              "lxcconfdir": layout.lxc_conf_dir, "manifest": layout.manifest},
                             indent=1))
        elif args.action == "install":
            made = install(layout, args.python, args.force)
            print(f"installed {sum(k != 'd' for k, _ in made)} paths; "
                  f"manifest {layout.staged(layout.manifest)}")
        else:
            for d in uninstall(layout):
                print(f"procfs uninstall: {d} kept: something else is in it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
