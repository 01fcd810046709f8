"""gRPC call metrics in Prometheus' text format.

Counted at the service edge (every servicer method goes through it): calls
by full method name, call type and status code, and a latency histogram per
method.  Label names and values are go-grpc-prometheus's, which containerd
serves (``grpc_code="NotFound"``, ``grpc_type="unary"``), so dashboards and
alerts written for containerd work unchanged.  Kept in plain dicts: one
process, one event loop, no locks needed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["REGISTRY", "Registry"]

#: grpc.StatusCode names -> Go's codes.Code.String(), the values containerd exports.
GO_CODE_NAMES = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Registry:
    def __init__(self) -> None:
        self.handled: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str, str], list[int]] = {}
        self.sums: defaultdict[tuple[str, str, str], float] = defaultdict(float)

    def observe(self, method: str, code: str, seconds: float, kind: str = "unary") -> None:
        """Count one finished call: ``/pkg.Service/Method``, a status code name
        (``NOT_FOUND`` or ``NotFound``), its duration, and go-grpc-prometheus's
        call type (``unary``, ``server_stream``, ``client_stream``, ``bidi_stream``)."""
        service, _, name = method.lstrip("/").rpartition("/")
        self.handled[(service, name, kind, GO_CODE_NAMES.get(code, code))] += 1
        key = (service, name, kind)
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * (len(BUCKETS) + 1)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[key] += seconds

    def render(self) -> str:
        out = [
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server.",
            "# TYPE grpc_server_handled_total counter",
        ]
        for (service, name, kind, code), n in sorted(self.handled.items()):
            out.append(
                f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="{name}",'
                f'grpc_service="{service}",grpc_type="{kind}"}} {n}'
            )
        out += [
            "# HELP grpc_server_handling_seconds Histogram of response latency of RPCs.",
            "# TYPE grpc_server_handling_seconds histogram",
        ]
        for (service, name, kind), counts in sorted(self.buckets.items()):
            labels = f'grpc_method="{name}",grpc_service="{service}",grpc_type="{kind}"'
            running = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'grpc_server_handling_seconds_bucket{{{labels},le="{le}"}} {running}')
            total = self.sums[(service, name, kind)]
            out.append(f"grpc_server_handling_seconds_sum{{{labels}}} {total}")
            out.append(f"grpc_server_handling_seconds_count{{{labels}}} {running}")
        return "\n".join(out) + "\n"


REGISTRY = Registry()
