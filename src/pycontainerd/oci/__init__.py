"""OCI runtime specs: the default spec containerd generates, and spec options.

``pycontainerd.oci.spec`` is the entry point (``generate``, ``to_any`` and
every option); ``defaults`` holds containerd's default spec, ``opts``,
``resources``, ``security`` and ``seccomp`` the options, and ``caps``,
``devices`` and ``user`` what they look up (capability names, the host's
device nodes, an image's accounts).  Nothing here mounts or reads a
container's root filesystem: options that need the image's /etc/passwd and
/etc/group take their text, which the client reads from the image.
"""
