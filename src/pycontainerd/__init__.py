"""pycontainerd: containerd, written in Python."""
