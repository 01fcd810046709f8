"""Client-side task IO (containerd's ``cio``): FIFOs, log URIs, terminals.

``pycontainerd.cio.new_creator(stdout=buf)`` makes FIFOs for a new task and
copies its output to ``buf``; ``stdio()`` uses this program's streams,
``terminal()`` gives the task a pty, ``null_io`` discards its output,
``log_file(path)`` and ``binary_io(program)`` let the shim write it.
See :mod:`pycontainerd.cio.io`.
"""

from __future__ import annotations

from pycontainerd.cio.io import (
    DEFAULT_FIFO_DIR,
    IO,
    Attach,
    Config,
    Creator,
    FIFOSet,
    StdinCloser,
    binary_io,
    load_fifos,
    log_file,
    log_uri,
    new_attach,
    new_creator,
    new_fifo_set_in_dir,
    null_io,
    stdio,
    terminal,
)

__all__ = [
    "DEFAULT_FIFO_DIR",
    "IO",
    "Attach",
    "Config",
    "Creator",
    "FIFOSet",
    "StdinCloser",
    "binary_io",
    "load_fifos",
    "log_file",
    "log_uri",
    "new_attach",
    "new_creator",
    "new_fifo_set_in_dir",
    "null_io",
    "stdio",
    "terminal",
]
