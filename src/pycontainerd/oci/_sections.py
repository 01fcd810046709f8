"""The spec's sections, created on first use (containerd's ``setProcess``,
``setLinux``...), and the rule for values Go's ``omitempty`` leaves out.
Shared by the option modules; private to this package."""

from __future__ import annotations

from typing import Any

from pycontainerd.oci.defaults import Spec, SpecOpt

__all__ = [
    "compose",
    "cpu_section",
    "linux_section",
    "memory_section",
    "process_section",
    "resources_section",
    "set_or_drop",
    "user_section",
]


def compose(*opts: SpecOpt) -> SpecOpt:
    """One option that applies ``opts`` in order (containerd's ``Compose``)."""

    def opt(spec: Spec) -> None:
        for each in opts:
            each(spec)

    return opt


def process_section(spec: Spec) -> dict[str, Any]:
    process: dict[str, Any] = spec.setdefault("process", {})
    return process


def user_section(spec: Spec) -> dict[str, Any]:
    user: dict[str, Any] = process_section(spec).setdefault("user", {"uid": 0, "gid": 0})
    return user


def linux_section(spec: Spec) -> dict[str, Any]:
    linux: dict[str, Any] = spec.setdefault("linux", {})
    return linux


def resources_section(spec: Spec) -> dict[str, Any]:
    resources: dict[str, Any] = linux_section(spec).setdefault("resources", {})
    return resources


def cpu_section(spec: Spec) -> dict[str, Any]:
    cpu: dict[str, Any] = resources_section(spec).setdefault("cpu", {})
    return cpu


def memory_section(spec: Spec) -> dict[str, Any]:
    memory: dict[str, Any] = resources_section(spec).setdefault("memory", {})
    return memory


def set_or_drop(section: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key``, or remove it for a value Go's ``omitempty`` leaves out."""
    # Identity, not equality: 0 is a value to keep, though 0 == False.
    if (
        value is None
        or value is False
        or value == ""
        or (isinstance(value, (list, dict)) and not value)
    ):
        section.pop(key, None)
    else:
        section[key] = value
