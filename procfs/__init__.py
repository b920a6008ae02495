"""procfs: per-container views of /proc and /sys, served over FUSE."""

__version__ = "0.1.0"
