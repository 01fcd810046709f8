"""OCI runtime specs: the default spec containerd generates, and spec options."""
