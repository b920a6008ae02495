"""procfs against LXCFS and against the floor (a do-nothing pyfuse3 server), in one run.

`python -m benchmarks` (or `make bench`); `--quick` for a smoke run. See README.md, "Speed".
"""
