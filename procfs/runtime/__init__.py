"""`procfs-runc`: a wrapper runtime with runc's command line.

It edits the bundle's config.json on `create`/`run` (the procfs OCI hook, a seccomp
user-notification rule for `sysinfo(2)`), gives each container a time namespace whose boot clock
starts at its creation, makes every later command (`exec` included) run in that namespace, and
then executes the real runtime in its place.

Modules: `cmdline` (what runc's arguments say), `settings` (which runtime, mount and socket),
`oci_config` (the edits, pure, and the atomic rewrite), `timens` (create or join a time
namespace), `container_init` (a container's init from the runtime's state), `wrapper` (main).
The wrapper imports nothing else from procfs, and each command only the modules it needs: it
runs on every runtime call. For the same reason its records are NamedTuples, not dataclasses
(importing `dataclasses` costs more than the rest of its imports together).
"""
