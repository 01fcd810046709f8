"""What Remote refuses before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.remote import Remote

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"oom_score": 1001}, "oom score"),
        ({"oom_score": -1001}, "oom score"),
        ({"address": "/tmp/" + "s" * 120}, "longer than 107 bytes"),
        ({"in_process": True, "start_daemon": False}, "in_process"),
        ({"health_interval": 0}, "positive"),
        ({"call_timeout": 0}, "positive"),
    ],
)
def test_bad_settings_are_refused_before_anything_starts(
    tmp_path: Path, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=words):
        Remote(tmp_path / "root", tmp_path / "state", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "state").exists()


def test_the_remote_exports_are_pinned() -> None:
    import pycontainerd.remote

    assert sorted(pycontainerd.remote.__all__) == [
        "Backend",
        "Backoff",
        "EventType",
        "INIT_PROCESS_ID",
        "LABEL_RESTART_POLICY",
        "ProcessStreams",
        "ProcessSummary",
        "Remote",
        "RemoteClient",
        "RestartManager",
        "RestartPolicy",
        "RestartPolicyName",
        "STOP_SIGNALS",
        "StateInfo",
        "Stats",
    ]
