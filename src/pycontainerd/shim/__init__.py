"""``containerd-shim-pyrunc-v2``: containerd's runtime v2 shim, on runc.

Design
------

A shim sits between the daemon and runc: it creates and supervises the
containers, reaps their processes, copies their IO and reports their exits,
and it outlives the daemon.  containerd's Go shim is one process per
container (about 2.6 MB PSS).  A Python process costs more than that just
to exist (an interpreter and asyncio and protobuf: roughly 20-30 MB) and
100+ ms to start, so this shim is built the other way round:

- **``start`` is tiny** (:mod:`pycontainerd.shim.main`): it imports only
  the standard library's basics, hashes the grouping key into a socket
  path, and prints that address if a server answers there (about 15 ms,
  most of it the interpreter's own start).  Only when none does it bind the
  socket and spawn one, handing it the listening socket as fd 3, in its own
  session, with the ``ShimCgroup`` of the runtime options applied.  Our
  daemon does not even run it while a server is live: it computes the
  same address (:mod:`pycontainerd.shim.address`) and connects.
- **One long-lived server per group** (:mod:`pycontainerd.shim.server`)
  serves many containers.  The group is the pod -- the
  ``io.kubernetes.cri.sandbox-id`` annotation, as containerd groups -- and
  otherwise the (daemon, namespace) pair: every container of a namespace
  shares a server.  Per container the server pays only its records, fds
  and buffers, so the memory per container falls towards containerd's as
  containers are added, and a warm server makes ``start`` a connect.

What survives what
------------------

- *The daemon dies or restarts*: nothing happens to the shim servers nor
  to their containers; events are queued (bounded) and forwarded when the
  daemon's ttrpc socket answers again; the daemon reconnects through the
  ``address`` file in each bundle.
- *A container fails* (runc errors, its IO breaks, it is OOM-killed): that
  is an answer to that container's requests or events about it; the other
  containers' records, copies and waits are independent.
- *A shim server dies* (killed, or a bug): its containers keep running --
  the server is their subreaper, not their only parent, and they are
  reparented -- but their output copies end with it and the daemon, seeing
  the connection close, runs ``delete`` for each: their tasks are reported
  exited and cleaned up (``runc delete --force``, the rootfs unmounted),
  as with containerd's own shim.  Grouping by namespace (not by host)
  keeps that blast radius to one namespace; pods get their own server.
- *The server is idle*: it lingers (``PYCONTAINERD_SHIM_IDLE_SECONDS``,
  300 s) for the next container, then removes its socket and exits.

Modules: ``main`` (the entry point: start, delete), ``server`` (the
process), ``_service`` (``containerd.task.v2.Task``), ``_runc`` (the runc
driver), ``_reaper`` (subreaper, spawning, exits), ``_io`` (fifos,
terminals, log files, logger binaries), ``_cgroups`` (metrics, OOM),
``_publisher`` (events to the daemon).
"""
