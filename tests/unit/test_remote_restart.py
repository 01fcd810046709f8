"""Docker's restart policies and backoff, as the remote client applies them."""

from __future__ import annotations

import dataclasses

import pytest

from pycontainerd import errdefs
from pycontainerd.remote import (
    Backoff,
    EventType,
    RestartManager,
    RestartPolicy,
    RestartPolicyName,
    StateInfo,
)

pytestmark = pytest.mark.unit

FAST = Backoff(initial=0.1, maximum=0.4, reset_after=10)


@pytest.mark.parametrize(
    ("text", "name", "count"),
    [
        ("no", RestartPolicyName.NO, 0),
        ("", RestartPolicyName.NO, 0),
        ("always", RestartPolicyName.ALWAYS, 0),
        ("unless-stopped", RestartPolicyName.UNLESS_STOPPED, 0),
        ("on-failure", RestartPolicyName.ON_FAILURE, 0),
        ("on-failure:5", RestartPolicyName.ON_FAILURE, 5),
    ],
)
def test_policies_parse_as_docker_writes_them(
    text: str, name: RestartPolicyName, count: int
) -> None:
    policy = RestartPolicy.parse(text)
    assert (policy.name, policy.maximum_retry_count) == (name, count)
    assert RestartPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["sometimes", "always:3", "no:1", "on-failure:", "on-failure:-1", "on-failure:x",
             "on-failure:99999999999"],
)  # fmt: skip
def test_a_bad_policy_is_an_invalid_argument(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="restart policy"):
        RestartPolicy.parse(text)


def test_on_failure_n_restarts_n_failures_and_never_a_success() -> None:
    manager = RestartManager(RestartPolicy.parse("on-failure:2"), FAST)
    assert manager.should_restart(0, False, 0.1) == (False, 0.0)
    assert manager.should_restart(1, False, 0.1) == (True, 0.1)
    assert manager.should_restart(1, False, 0.1) == (True, 0.2)
    assert manager.should_restart(1, False, 0.1) == (False, 0.0)
    assert manager.restart_count == 2


def test_on_failure_without_a_count_has_no_limit() -> None:
    manager = RestartManager(RestartPolicy.parse("on-failure"), FAST)
    assert all(manager.should_restart(2, False, 0)[0] for _ in range(50))


def test_the_delay_doubles_up_to_the_maximum_and_resets_after_a_long_run() -> None:
    manager = RestartManager(RestartPolicy.parse("always"), FAST)
    delays = [manager.should_restart(0, False, 0.1)[1] for _ in range(4)]
    assert delays == [0.1, 0.2, 0.4, 0.4]
    assert manager.should_restart(0, False, 10.0) == (True, 0.1)


@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure"])
def test_no_policy_restarts_a_container_the_user_stopped(policy: str) -> None:
    manager = RestartManager(RestartPolicy.parse(policy), FAST)
    assert manager.should_restart(137, True, 0.1) == (False, 0.0)
    assert manager.should_restart(137, False, 0.1)[0]


def test_no_never_restarts() -> None:
    manager = RestartManager(RestartPolicy.parse("no"), FAST)
    assert manager.should_restart(1, False, 100) == (False, 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"initial": 2, "maximum": 1}, {"factor": 0.5}, {"reset_after": -1}],
)
def test_a_bad_backoff_is_an_invalid_argument(kwargs: dict[str, float]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        Backoff(**kwargs)


def test_state_info_is_a_frozen_slotted_record_with_libcontainerd_names() -> None:
    info = StateInfo(EventType.EXIT, pid=7, exit_code=3)
    assert info.process_id == "init"
    assert not hasattr(info, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.pid = 8  # type: ignore[misc]
    assert [e.value for e in EventType] == [
        "start-container", "pause", "resume", "exit", "restart", "restore",
        "start-process", "exit-process", "oom",
    ]  # fmt: skip
