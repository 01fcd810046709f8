"""Restart policies and labels (containerd's ``runtime/restart``): parsing,
the restart decision, and the client's container options."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs
from pycontainerd.client import restart as options
from pycontainerd.containers import Container
from pycontainerd.restart import (
    COUNT_LABEL,
    EXPLICITLY_STOPPED_LABEL,
    LOG_PATH_LABEL,
    LOG_URI_LABEL,
    POLICY_LABEL,
    STATUS_LABEL,
    Policy,
    parse_policy,
    should_restart,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "policy", "printed"),
    [
        ("", Policy("always"), "always"),
        ("always", Policy("always"), "always"),
        ("no", Policy("no"), "no"),
        ("unless-stopped", Policy("unless-stopped"), "unless-stopped"),
        ("on-failure", Policy("on-failure"), "on-failure"),
        ("on-failure:3", Policy("on-failure", 3), "on-failure:3"),
        ("on-failure:+3", Policy("on-failure", 3), "on-failure:3"),
        ("on-failure:0", Policy("on-failure", 0), "on-failure"),
    ],
)
def test_policies_parse_and_print_as_containerd(text: str, policy: Policy, printed: str) -> None:
    assert parse_policy(text) == policy
    assert str(parse_policy(text)) == printed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("always:3", 'restart policy "always" not support max retry count'),
        ("no:1", 'restart policy "no" not support max retry count'),
        (":2", 'restart policy "" not support max retry count'),
        ("on-failure:", "invalid max retry count: "),
        ("on-failure:x", "invalid max retry count: x"),
        ("on-failure: 3", "invalid max retry count:  3"),
        ("on-failure:1_000", "invalid max retry count: 1_000"),
        ("on-failure:3:4", "invalid max retry count: 3:4"),
        ("on-failure:99999999999999999999", "invalid max retry count: 99999999999999999999"),
        ("sometimes", 'restart policy "sometimes" not supported'),
        ("Always", 'restart policy "Always" not supported'),
        ("x" * 65, "restart policy is longer than 64 characters"),
    ],
)
def test_bad_policies_are_invalid_arguments(text: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as err:
        parse_policy(text)
    assert err.value.message == message


@pytest.mark.parametrize(
    ("policy", "exit_status", "count", "stopped", "restart"),
    [
        (None, 0, "", "", True),  # no label: always
        ("always", 0, "", "", True),
        ("always", 1, "7", "", True),
        ("no", 1, "", "", False),
        ("on-failure", 0, "", "", False),
        ("on-failure", 2, "", "", True),
        ("on-failure", 2, "100", "", True),  # no limit
        ("on-failure:2", 1, "", "", True),
        ("on-failure:2", 1, "1", "", True),
        ("on-failure:2", 1, "2", "", False),
        ("on-failure:2", 1, "5", "", False),
        ("unless-stopped", 0, "", "", True),
        ("unless-stopped", 0, "", "false", True),
        ("unless-stopped", 0, "", "junk", True),
        ("unless-stopped", 0, "", "true", False),
        ("unless-stopped", 0, "", "1", False),
        ("unless-stopped", 0, "", "T", False),
    ],
)
def test_should_restart_follows_the_policy(
    policy: str | None, exit_status: int, count: str, stopped: str, restart: bool
) -> None:
    labels = {STATUS_LABEL: "running"}
    if policy is not None:
        labels[POLICY_LABEL] = policy
    if count:
        labels[COUNT_LABEL] = count
    if stopped:
        labels[EXPLICITLY_STOPPED_LABEL] = stopped
    assert should_restart(exit_status, labels) is restart


def test_a_bad_policy_or_count_label_is_an_error_not_a_restart() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        should_restart(1, {POLICY_LABEL: "sometimes"})
    with pytest.raises(errdefs.InvalidArgument):
        should_restart(1, {POLICY_LABEL: "on-failure:3", COUNT_LABEL: "many"})


def _apply(*opts: options.ContainerOpt, labels: dict[str, str] | None = None) -> dict[str, str]:
    c = Container(id="web", labels=labels or {"app": "web"})
    for opt in opts:
        c = opt(c)
    return dict(c.labels)


def test_options_set_the_labels_containerd_reads() -> None:
    labels = _apply(
        options.with_status("running"),
        options.with_log_uri("binary:///usr/bin/logger?tag=web"),
        options.with_policy(Policy("on-failure", 5)),
    )
    assert labels == {
        "app": "web",
        "containerd.io/restart.status": "running",
        "containerd.io/restart.loguri": "binary:///usr/bin/logger?tag=web",
        "containerd.io/restart.policy": "on-failure:5",
    }
    assert _apply(options.with_policy("unless-stopped"))[POLICY_LABEL] == "unless-stopped"
    assert _apply(options.with_file_log_uri("/var/log/a b.log"))[LOG_URI_LABEL] == (
        "file:///var/log/a%20b.log"
    )
    assert _apply(options.with_binary_log_uri("/bin/logger", {"b": "2", "a": "1"}))[
        LOG_URI_LABEL
    ] == ("binary:///bin/logger?a=1&b=2")
    assert _apply(options.with_log_path("/var/log/web.log"))[LOG_PATH_LABEL] == "/var/log/web.log"


def test_options_refuse_what_the_monitor_could_not_use() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        options.with_status("restarting")
    with pytest.raises(errdefs.InvalidArgument):
        options.with_log_uri("file://relative.log")
    with pytest.raises(errdefs.InvalidArgument):
        options.with_log_uri("syslog:///dev/log")
    with pytest.raises(errdefs.InvalidArgument):
        options.with_file_log_uri("relative.log")
    with pytest.raises(errdefs.InvalidArgument):
        options.with_log_path("relative.log")
    with pytest.raises(errdefs.InvalidArgument):
        options.with_policy("sometimes")


def test_no_restarts_clears_the_monitor_labels_and_keeps_the_rest() -> None:
    labels = _apply(
        options.with_status("running"),
        options.with_file_log_uri("/var/log/web.log"),
        options.with_log_path("/var/log/old.log"),
        options.with_policy("always"),
        options.with_no_restarts,
        labels={"app": "web", COUNT_LABEL: "3"},
    )
    assert labels == {"app": "web", COUNT_LABEL: "3"}
