"""What procfs-runc adds to `create` and `exec`, against plain runc on the same bundle.

`python -m benchmarks.wrapper_overhead [--runs 20] [--out DIR] [--wrapper PATH] [--only A,B]`
(root, runc, procfs-runc installed beside this interpreter or at PATH: e.g. a regular, not
editable, install, whose start-up is not slowed by the editable finder).

Scenarios, interleaved run by run so that a noisy stretch hits all of them alike:
- create: `runc create` of a bundle without hooks; the wrapper with only its own work (the
  annotation io.procfs.hook=false: config edit, time namespace, listener probe); the wrapper
  with the hook and a running server (what a user gets); runc with the same hook written into
  the bundle by hand (the hook's own cost, to set the wrapper's apart);
- exec: `exec ID true` in a container created by each, through the same program.
Each create is followed by an untimed `delete -f`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.sandbox import Server

WRAPPER = os.path.join(os.path.dirname(sys.executable), "procfs-runc")
PROCFS = os.path.join(os.path.dirname(sys.executable), "procfs")
OUT = Path(__file__).resolve().parent / "results" / "wrapper"
OPS = ("create", "exec", "version")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def make_bundle(directory: str) -> dict[str, Any]:
    """A bundle whose rootfs binds the host's /usr (and the merged-/usr links)."""
    os.makedirs(directory)
    subprocess.run(["runc", "spec", "--bundle", directory], check=True)
    rootfs = os.path.join(directory, "rootfs")
    for d in ("proc", "sys", "dev", "usr", "tmp"):
        os.makedirs(os.path.join(rootfs, d))
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), os.path.join(rootfs, name))
    with open(os.path.join(directory, "config.json")) as f:
        config: dict[str, Any] = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sleep", "1000"]
    config["root"] = {"path": "rootfs", "readonly": False}
    config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                             "options": ["rbind", "nosuid", "nodev", "ro"]})
    config["linux"]["resources"] = {"memory": {"limit": 256 << 20}}
    return config


class Scenario:
    def __init__(self, name: str, program: str, config: dict[str, Any], env: dict[str, str],
                 directory: str) -> None:
        self.name, self.program, self.env = name, program, env
        self.bundle = os.path.join(directory, name)
        shutil.copytree(os.path.join(directory, "template"), self.bundle, symlinks=True)
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(config, f)
        # op → seconds; ops: create, exec, and version (`--version`: the program's start alone)
        self.wall: dict[str, list[float]] = {op: [] for op in OPS}
        self.cpu: dict[str, list[float]] = {op: [] for op in OPS}

    def _timed(self, op: str, *args: str) -> None:
        """Wall time, and CPU time of the program (and the children it waited for): on a
        loaded host the wall time comes in steps of the scheduler's waits, the CPU time not."""
        # The init keeps create's stdio: a file, never a pipe that would not close.
        with tempfile.TemporaryFile() as err:
            before = _children_cpu()
            t0 = time.perf_counter()
            r = subprocess.run([self.program, *args], env=self.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err, timeout=60)
            elapsed = time.perf_counter() - t0
            cpu = _children_cpu() - before
            if r.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{self.name} {args[0]}: {err.read().decode()}")
        self.wall[op].append(elapsed)
        self.cpu[op].append(cpu)

    def once(self) -> None:
        cid = f"procfs-bench-{self.name}-{uuid.uuid4().hex[:8]}"
        try:
            self._timed("version", "--version")
            self._timed("create", "create", "--bundle", self.bundle, cid)
            self._timed("exec", "exec", cid, "true")
        finally:
            subprocess.run([self.program, "delete", "-f", cid], env=self.env,
                           capture_output=True, check=False)


def summary(values: list[float]) -> dict[str, Any]:
    ms = sorted(v * 1000 for v in values)
    return {"p50_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "min_ms": round(ms[0], 1), "runs": len(ms), "all_ms": [round(v, 1) for v in ms]}


def scenarios(directory: str, server: Server, wrapper: str) -> list[Scenario]:
    base = make_bundle(os.path.join(directory, "template"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCFS_")}
    env |= {"PROCFS_MOUNT": server.mountpoint, "PROCFS_RUNTIME_CONFIG": "/nonexistent",
            "PROCFS_SYSINFO_SOCKET": os.path.join(directory, "no-listener.sock"),
            "PROCFS_STATE": os.path.join(directory, "attached.json")}
    hook = {"path": PROCFS, "args": ["procfs", "oci-hook", "--mount", server.mountpoint],
            "env": [f"PROCFS_STATE={env['PROCFS_STATE']}"], "timeout": 30}

    def variant(cgroup: str, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(json.dumps(base))
        config["linux"]["cgroupsPath"] = f"/procfs-bench-{cgroup}-{uuid.uuid4().hex[:6]}"
        config.update(changes)
        return config

    runc = shutil.which("runc") or "runc"
    return [
        Scenario("runc", runc, variant("runc"), env, directory),
        Scenario("wrapper-own", wrapper,
                 variant("own", annotations={"io.procfs.hook": "false"}), env, directory),
        Scenario("wrapper", wrapper, variant("wrapper"), env, directory),
        Scenario("runc-hook", runc, variant("hook", hooks={"createRuntime": [hook]}), env,
                 directory),
    ]


def measure(runs: int, wrapper: str, only: list[str] | None = None,
            warmup: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="procfs-bench-wrapper-") as d, Server() as server:
        made = [s for s in scenarios(d, server, wrapper) if not only or s.name in only]
        for i in range(warmup + runs):
            for s in made:
                s.once()
            if i < warmup:
                for s in made:
                    for op in OPS:
                        s.wall[op].clear()
                        s.cpu[op].clear()
    results: dict[str, Any] = {}
    for s in made:
        results[s.name] = {op: {"wall": summary(s.wall[op]), "cpu": summary(s.cpu[op])}
                           for op in OPS}
    for op in OPS:
        for kind in ("wall", "cpu"):
            base = results["runc"][op][kind]["p50_ms"]
            for name in set(results) - {"runc"}:
                r = results[name][op][kind]
                r["added_p50_ms"] = round(r["p50_ms"] - base, 1)
    return results


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def markdown(results: dict[str, Any], runs: int) -> str:
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
    lines = [f"# procfs-runc: time added to create and exec (p50 of {runs} runs)", "",
             f"Machine: {os.cpu_count()} CPUs, kernel {os.uname().release}, "
             f"{runc.splitlines()[0]}, Python {sys.version.split()[0]}, load average "
             f"{load_average()} at the end",
             "", "p50 in ms, wall time / CPU time (the program and the children it waited for; "
             "the container's processes not), and what each adds to plain runc's.", "",
             "| scenario | create | added | exec | added | --version | added |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = []
        for op in OPS:
            wall, cpu = r[op]["wall"], r[op]["cpu"]
            cells.append(f"{wall['p50_ms']} / {cpu['p50_ms']}")
            cells.append(f"{wall.get('added_p50_ms', '')} / {cpu.get('added_p50_ms', '')}"
                         if name != "runc" else "")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wrapper_overhead",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--wrapper", default=WRAPPER, help="the procfs-runc to measure")
    p.add_argument("--only", type=lambda t: t.split(","), default=None,
                   help="scenarios (runc is always measured)")
    a = p.parse_args(argv)
    results = measure(a.runs, a.wrapper, a.only and ["runc", *a.only])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results, a.runs)
    (a.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
