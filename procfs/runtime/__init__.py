"""The container runtime side of procfs: what no file overlay can reach.

`procfs-runc`, a wrapper runtime with runc's command line: it edits the bundle's config.json on
`create`/`run` (the procfs OCI hook, a seccomp user-notification rule for `sysinfo(2)`), gives
each container a time namespace whose boot clock starts at its creation, makes every later
command (`exec` included) run in that namespace, and then executes the real runtime in its
place. Modules: `cmdline` (what runc's arguments say), `settings` (which runtime, mount and
socket), `oci_config` (the edits, pure, and the atomic rewrite), `timens` (create or join a time
namespace), `container_init` (a container's init from the runtime's state), `wrapper` (main). The
wrapper imports nothing else from procfs, and each command only the modules it needs: it runs on
every runtime call. For the same reason its records are NamedTuples, not dataclasses.

sysinfo(2), answered by the server:
- `seccomp`: seccomp user notification (seccomp_unotify(2)) in ctypes: the structs, the ioctls.
- `seccomp_agent`: what runc and crun send to `linux.seccomp.listenerPath` (state JSON + fd).
- `keeper` (`python -m procfs.runtime.keeper`): the small process that owns that socket and
  keeps every listener fd alive across server restarts; `keeper_loop`: its poll loop;
  `keeper_protocol`: its messages; `keeper_client`: the server's way to it.
- `sysinfo`: `struct sysinfo` and the answer to one notification; `remote_memory`: writing it
  into the caller; `stuck_callers`: callers a killed server left waiting.
- `sysinfo_service`: `serve_sysinfo`, the trio task the server runs to answer sysinfo(2).
"""
