"""The container runtime side of procfs: what no file overlay can reach.

- `seccomp`: seccomp user notification (seccomp_unotify(2)) in ctypes: the structs, the ioctls.
- `seccomp_agent`: what runc and crun send to `linux.seccomp.listenerPath` (state JSON + fd).
- `keeper` (`python -m procfs.runtime.keeper`): the small process that owns that socket and
  keeps every listener fd alive across server restarts; `keeper_loop`: its poll loop;
  `keeper_protocol`: its messages; `keeper_client`: the server's way to it.
- `sysinfo`: `struct sysinfo` and the answer to one notification; `remote_memory`: writing it
  into the caller; `stuck_callers`: callers a killed server left waiting.
- `sysinfo_service`: `serve_sysinfo`, the trio task the server runs to answer sysinfo(2).
"""
