"""Fuzz every service's request decoding against a live daemon.

Random requests (messages built from each method's descriptor, and raw bytes:
random, or valid messages with bytes flipped, cut or appended) go to every
method the daemon serves, with random namespace and lease headers.

What may come back:

* OK, or any typed status, except UNKNOWN: UNKNOWN is what the service edge
  answers for an exception nothing mapped, i.e. a bug.  The one exception
  is :data:`CONTAINERD_UNKNOWNS`: answers where containerd 1.6 itself says
  UNKNOWN (a plain Go error) and we say the same on purpose, as the wire
  contract asks; each is listed with where containerd says it;
* INTERNAL only for bytes that are not a message of the request type, which
  is what containerd (grpc-go) answers for them (``failed to decode
  request``), a Timestamp out of Go's calendar included (containerd decodes
  them as Go times, gogoproto's stdtime).  A decodable request must never
  get INTERNAL;
* DEADLINE_EXCEEDED only from a streaming method (Subscribe and Watch wait
  for events by design; each call here has a short deadline).  A unary call
  gets :data:`UNARY_DEADLINE` seconds, and running out of them is a hang.

After every input the daemon's process is alive, it answers Version, and its
log holds no unexpected error (``unexpected error in``, grpclib's
``Application error``, a traceback).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import strategies as st

from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from tests.fuzz import _harness
from tests.fuzz._proto import KNOWN_BLOBS, Method, decodes_in_containerd, defang, messages, methods
from tests.support import daemons

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]

UNARY_DEADLINE = 10.0
STREAM_DEADLINE = 0.5
MAX_RESPONSES = 200
VERSION = "/containerd.services.version.v1.Version/Version"
#: Log lines that only an unhandled exception writes.
BAD_LOG_LINES = (
    "unexpected error in",
    "Application error",
    "Server error",
    "Failed to handle cancellation",
    "Timeout occurred",
    "Traceback",
)


#: UNKNOWN answers that are containerd's own (message prefix -> where containerd says it).
CONTAINERD_UNKNOWNS = {
    "failed to get stream processor for ": (
        "diff/apply/apply_linux.go: diff.GetProcessor's ErrNoProcessor, a plain error"
    ),
}


def _identity(b: bytes) -> bytes:
    return b


@dataclass
class Target:
    """The daemon under fuzz, a channel to it, and how much of its log was read."""

    daemon: daemons.RunningDaemon
    channel: grpc.Channel
    served: list[Method]
    log_offset: int = 0
    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def call(
        self, method: Method, payloads: list[bytes], metadata: tuple[tuple[str, str], ...]
    ) -> tuple[grpc.StatusCode, str]:
        """Send ``payloads`` (one unless the method streams requests); the status."""
        timeout = STREAM_DEADLINE if method.streaming else UNARY_DEADLINE
        try:
            if method.client_streaming:
                call = self.channel.stream_stream(
                    method.path, request_serializer=_identity, response_deserializer=_identity
                )
                responses = call(iter(payloads), timeout=timeout, metadata=metadata)
                for i, _ in enumerate(responses):
                    if i >= MAX_RESPONSES:
                        responses.cancel()
                        break
            elif method.server_streaming:
                stream = self.channel.unary_stream(
                    method.path, request_serializer=_identity, response_deserializer=_identity
                )
                responses = stream(payloads[0], timeout=timeout, metadata=metadata)
                for i, _ in enumerate(responses):
                    if i >= MAX_RESPONSES:
                        responses.cancel()
                        break
            else:
                unary = self.channel.unary_unary(
                    method.path, request_serializer=_identity, response_deserializer=_identity
                )
                unary(payloads[0], timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.CANCELLED and method.streaming:
                return grpc.StatusCode.OK, ""  # we cancelled it after MAX_RESPONSES
            return code, exc.details() or ""  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""

    def assert_healthy(self, what: str) -> None:
        """The same process still serves, and logged no unhandled exception."""
        assert self.daemon.process.poll() is None, f"daemon died after {what}:\n{self.new_log()}"
        version = self.channel.unary_unary(
            VERSION, request_serializer=_identity, response_deserializer=_identity
        )
        try:
            version(b"", timeout=UNARY_DEADLINE)
        except grpc.RpcError as exc:
            raise AssertionError(f"Version failed after {what}: {exc}\n{self.new_log()}") from exc
        log = self.new_log()
        bad = [line for line in log.splitlines() if any(b in line for b in BAD_LOG_LINES)]
        assert not bad, f"daemon logged an unhandled error after {what}:\n{log[-4000:]}"

    def new_log(self) -> str:
        with open(self.daemon.log, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode(errors="replace")


def _write_known_blobs(channel: grpc.Channel) -> None:
    """Blobs whose digests the random requests name, kept from GC by a root label."""
    stub = content_pb2_grpc.ContentStub(channel)
    for namespace in ("default", "fuzz"):
        for i, blob in enumerate(KNOWN_BLOBS):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            requests = [
                content_pb2.WriteContentRequest(
                    action=content_pb2.WriteAction.WRITE,
                    ref=f"fuzz-known-{i}",
                    total=len(blob),
                    expected=digest,
                    data=blob,
                ),
                content_pb2.WriteContentRequest(
                    action=content_pb2.WriteAction.COMMIT,
                    ref=f"fuzz-known-{i}",
                    total=len(blob),
                    expected=digest,
                    offset=len(blob),
                    labels={"containerd.io/gc.root": "2000-01-01T00:00:00Z"},
                ),
            ]
            try:
                list(stub.Write(iter(requests), metadata=(("containerd-namespace", namespace),)))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                    raise


def _served(channel: grpc.Channel, declared: list[Method]) -> list[Method]:
    """The declared methods the daemon answers (UNIMPLEMENTED ones are left out)."""
    probe = Target.__new__(Target)
    probe.channel = channel
    served = []
    for method in declared:
        code, _ = probe.call(method, [b""], (("containerd-namespace", "fuzz-probe"),))
        if code != grpc.StatusCode.UNIMPLEMENTED:
            served.append(method)
    return served


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with (
        daemons.pycontainerd(log_level="info") as daemon,
        grpc.insecure_channel(f"unix://{daemon.address}") as channel,
    ):
        _write_known_blobs(channel)
        declared = methods()
        served = _served(channel, declared)
        unserved = sorted(
            {m.path.rsplit("/", 1)[0] for m in declared}
            - {m.path.rsplit("/", 1)[0] for m in served}
        )
        _harness.NOTES.append(
            f"daemon: {len(served)} of {len(declared)} declared methods served; "
            f"not served: {', '.join(s.lstrip('/') for s in unserved) or 'none'}"
        )
        t = Target(daemon, channel, served)
        t.assert_healthy("start-up")
        yield t
        t.assert_healthy("the fuzz pass")
        _harness.NOTES.append(
            "daemon answers: " + ", ".join(f"{c} {n}" for c, n in t.codes.most_common())
        )


# -- inputs ------------------------------------------------------------------------------

_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "containerd-namespace": st.sampled_from(["default", "fuzz", "k8s.io", "-bad", "", "x" * 77])
        | _PRINTABLE,
        "containerd-lease": st.sampled_from(["fuzz-lease", "nope", "-bad"]) | _PRINTABLE,
    },
).map(lambda d: tuple(d.items()))


@dataclass(frozen=True)
class Request:
    method: Method
    payloads: tuple[bytes, ...]
    headers: tuple[tuple[str, str], ...]

    def decodable(self) -> bool:
        """Whether containerd would decode every payload (else INTERNAL is its answer)."""
        for payload in self.payloads:
            try:
                msg = self.method.request.FromString(payload)
            except Exception:
                return False
            if not decodes_in_containerd(msg):
                return False
        return True

    def __repr__(self) -> str:
        shown = []
        for payload in self.payloads:
            try:
                msg = self.method.request.FromString(payload)
                shown.append(f"{payload.hex()} = {type(msg).__name__}({msg!s}".rstrip() + ")")
            except Exception:
                shown.append(f"{payload.hex()} (undecodable)")
        return f"Request({self.method.path}, headers={self.headers}, payloads={shown})"


def _payloads(
    method: Method, payload: st.SearchStrategy[bytes]
) -> st.SearchStrategy[tuple[bytes, ...]]:
    if method.client_streaming:
        return st.lists(payload, min_size=0, max_size=3).map(tuple)
    return payload.map(lambda p: (p,))


def message_requests(served: list[Method]) -> st.SearchStrategy[Request]:
    def for_method(method: Method) -> st.SearchStrategy[Request]:
        payload = messages(method.request.DESCRIPTOR).map(lambda m: defang(m).SerializeToString())
        return st.builds(Request, st.just(method), _payloads(method, payload), HEADERS)

    return st.sampled_from(served).flatmap(for_method)


def _mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    raw = bytearray(data)
    for kind, at, chunk in edits:
        pos = at % (len(raw) + 1)
        if kind == "flip" and raw:
            raw[pos % len(raw)] ^= chunk[0] if chunk else 0xFF
        elif kind == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = chunk
    return bytes(raw)


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def byte_requests(served: list[Method]) -> st.SearchStrategy[Request]:
    """Raw bytes: random, or a valid request with a few bytes changed.

    Mutated bytes that still decode can carry a mount the defanging never
    saw, so a mutated message is decoded and defanged again before it goes.
    """

    def for_method(method: Method) -> st.SearchStrategy[Request]:
        def redefang(data: bytes) -> bytes:
            try:
                msg = method.request.FromString(data)
            except Exception:
                return data  # not a message: the daemon cannot act on it either
            return defang(msg).SerializeToString()

        valid = messages(method.request.DESCRIPTOR).map(lambda m: defang(m).SerializeToString())
        payload = st.one_of(
            st.binary(max_size=64),
            st.builds(_mutate, valid, EDITS).map(redefang),
        )
        return st.builds(Request, st.just(method), _payloads(method, payload), HEADERS)

    return st.sampled_from(served).flatmap(for_method)


def check_request(target: Target, request: Request, *, raw: bool = False) -> None:
    code, details = target.call(request.method, list(request.payloads), request.headers)
    allowed = code == grpc.StatusCode.UNKNOWN and details.startswith(tuple(CONTAINERD_UNKNOWNS))
    target.codes[f"{code.name} (containerd's own)" if allowed else code.name] += 1
    if raw and code == grpc.StatusCode.INTERNAL and not request.decodable():
        target.assert_healthy(repr(request))
        return
    said = f"{code.name} ({details!r}) for {request!r}"
    if allowed:
        code = grpc.StatusCode.OK  # containerd's answer too (see CONTAINERD_UNKNOWNS)
    assert code != grpc.StatusCode.UNKNOWN, said
    assert code != grpc.StatusCode.UNAVAILABLE, f"connection lost: {said}"
    if code == grpc.StatusCode.INTERNAL:
        assert not request.decodable(), f"decodable: {said}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert request.method.streaming, f"unary call hung: {said}"
    target.assert_healthy(repr(request))


def test_daemon_answers_random_messages_to_every_method(target: Target) -> None:
    def check(request: Request) -> None:
        check_request(target, request)

    _harness.run("daemon-messages", message_requests(target.served), check, short=150)


def test_daemon_answers_random_bytes_to_every_method(target: Target) -> None:
    def check(request: Request) -> None:
        check_request(target, request, raw=True)

    _harness.run("daemon-bytes", byte_requests(target.served), check, short=80)


def test_fuzz_writes_nothing_outside_the_daemon_root(target: Target) -> None:
    """Defanged mounts name /nonexistent-fuzz; nothing may have made it."""
    assert not Path("/nonexistent-fuzz").exists()
