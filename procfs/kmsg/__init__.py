"""A kernel log per container: rings of records served as `dev/kmsg` with the /dev/kmsg ABI.

`record` formats and parses records, `ring` holds one container's records and its readers'
positions, `service` keeps every container's ring (bounds, rate limits, expiry), `router` copies
the host's kernel lines that belong to a container (OOM kills) into its ring, and `node` is the
FUSE file.
"""
