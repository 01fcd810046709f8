"""Names the entry point and the server share (no imports: ``start`` loads it)."""

#: Where shim sockets live, as containerd 1.6's ``shim.SocketAddress``.
SOCKET_DIR = "/run/containerd/s"
#: runc's state root when the runtime options name none (containerd's).
RUNC_ROOT = "/run/containerd/runc"
#: Files a bundle holds for the shim, as the Go shim names them.
ADDRESS_FILE = "address"
OPTIONS_FILE = "options.json"
INIT_PID_FILE = "init.pid"
#: The private method ``delete`` calls on a live server.
CLEANUP_SERVICE = "pycontainerd.shim.v1.Cleanup"
