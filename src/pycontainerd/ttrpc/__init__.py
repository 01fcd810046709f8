"""ttrpc: containerd's lightweight RPC over unix sockets, on asyncio.

containerd talks to its shims, and shims forward their events back to it,
over ttrpc (github.com/containerd/ttrpc): gRPC's service/method/status model
without HTTP/2.  Each message is one frame -- a 10-byte header (data length,
stream id, message type, flags; big-endian) and the data -- and a call is a
stream: the client opens it with a ``Request`` frame (stream ids odd and
increasing) and the server ends it with a ``Response`` frame.  Both
envelopes are ttrpc's protobuf messages::

    Request  {service, method, payload, timeout_nano, metadata: [KeyValue{key, value}]}
    Response {status: google.rpc.Status{code, message, details}, payload}

Status codes are gRPC's (:class:`Code`).  Streaming calls (ttrpc 1.2) add
``Data`` frames and two flags: a client stream's Request says *remote open*
and its last Data frame *remote closed* (with *no data* for an empty close);
a server stream sends Data frames and ends with an empty remote-closed one,
or with a Response carrying an error.  containerd's namespace travels in the
``containerd-namespace-ttrpc`` metadata; this package does not interpret
metadata, it hands it to the handler (:class:`ServerContext`).

The server answers as ttrpc's does where a peer can tell: ``UNIMPLEMENTED``
``service <name>`` / ``method <name>`` for what is not registered,
``INVALID_ARGUMENT`` ``unmarshal request error: ...`` for a Request that
does not decode, ``INVALID_ARGUMENT`` for an even or reused stream id,
``RESOURCE_EXHAUSTED`` ``message length N exceed maximum message size of
4194304`` for an oversized frame, ``DEADLINE_EXCEEDED`` ``context deadline
exceeded`` when a call outlives its ``timeout_nano``.  Frames of unknown
types are ignored, as ttrpc does for the protocol's future.

Bounds (every input a peer controls)
------------------------------------

- A frame carries at most 4 MiB of data (:data:`MAX_MESSAGE_LENGTH`, ttrpc's
  ``messageLengthMax``).  A longer one is refused from its header: its data
  is skipped as it arrives, never held, and its stream gets
  ``RESOURCE_EXHAUSTED``; the connection goes on.  A connection buffers at
  most one incomplete frame.
- A request carries at most :data:`MAX_METADATA_ENTRIES` (128) metadata
  pairs and :data:`MAX_METADATA_BYTES` (64 KiB) of them, counted while
  decoding; past either, ``RESOURCE_EXHAUSTED``.  Names echoed in errors are
  cut at 256 characters.
- A server connection runs at most ``max_streams`` calls at once (default
  1024); one more is answered ``RESOURCE_EXHAUSTED``.  A server holds at
  most ``max_connections`` connections (default 4096); past that, new ones
  are closed at once.
- Messages received on a stream wait for their reader in an inbox; past 64
  messages or 4 MiB in one inbox, or 16 MiB in all of a connection's, the
  connection stops reading until the reader catches up (the peer waits, as
  on a full socket; ttrpc drops the message after a second instead).  A
  sender awaits the transport's drain, so a peer that does not read cannot
  make us buffer more than its streams' pending messages.
- A call's ``timeout_nano`` bounds its handler: past it the handler is
  cancelled.  When the connection closes, every handler still running on it
  is cancelled.

Using it::

    server = Server()
    server.register("example.v1.Echo", "Say", say)   # async def say(payload, ctx) -> bytes
    await server.start(path)
    ...
    async with await Client.connect(path) as client:
        reply = await client.call("example.v1.Echo", "Say", b"...", timeout=5)
    await server.shutdown(grace=5)

This package is a leaf: it imports the standard library and protobuf only.
"""

from __future__ import annotations

from pycontainerd.ttrpc._client import Client, ClientStream, Metadata
from pycontainerd.ttrpc._errors import (
    Code,
    ConnectionClosed,
    ProtocolError,
    StatusError,
    TTRPCError,
)
from pycontainerd.ttrpc._server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_STREAMS,
    Handler,
    Server,
    ServerContext,
)
from pycontainerd.ttrpc._wire import (
    MAX_MESSAGE_LENGTH,
    MAX_METADATA_BYTES,
    MAX_METADATA_ENTRIES,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_STREAMS",
    "MAX_MESSAGE_LENGTH",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "Client",
    "ClientStream",
    "Code",
    "ConnectionClosed",
    "Handler",
    "Metadata",
    "ProtocolError",
    "Server",
    "ServerContext",
    "StatusError",
    "TTRPCError",
]
