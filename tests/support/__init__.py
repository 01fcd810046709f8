"""Test helpers that run real daemons (ours and Debian's containerd)."""
