"""Spec options for capabilities and privileges: capability sets, new
privileges, masked and read-only paths, writable sysfs and cgroupfs,
SELinux, AppArmor, seccomp, and containerd's ``WithPrivileged``.  See
:mod:`pycontainerd.oci.opts` for how options work."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pycontainerd.oci import caps as _caps
from pycontainerd.oci._sections import compose, linux_section, process_section, set_or_drop
from pycontainerd.oci.defaults import Spec, SpecOpt
from pycontainerd.oci.resources import with_all_devices_allowed, with_host_devices

__all__ = [
    "with_add_capabilities",
    "with_all_current_capabilities",
    "with_all_known_capabilities",
    "with_ambient_capabilities",
    "with_apparmor_profile",
    "with_capabilities",
    "with_drop_capabilities",
    "with_masked_paths",
    "with_new_privileges",
    "with_no_new_privileges",
    "with_privileged",
    "with_privileged_devices",
    "with_readonly_paths",
    "with_seccomp",
    "with_seccomp_unconfined",
    "with_selinux_label",
    "with_writable_cgroupfs",
    "with_writable_sysfs",
]


def _capabilities(spec: Spec) -> dict[str, list[str]]:
    capabilities: dict[str, list[str]] = process_section(spec).setdefault("capabilities", {})
    return capabilities


_CAP_SETS = ("bounding", "effective", "permitted")


def with_capabilities(names: Iterable[str]) -> SpecOpt:
    """Set the bounding, effective and permitted capabilities to ``names``."""
    wanted = list(names)

    def opt(spec: Spec) -> None:
        capabilities = _capabilities(spec)
        for key in _CAP_SETS:
            set_or_drop(capabilities, key, list(wanted))

    return opt


def with_add_capabilities(names: Iterable[str]) -> SpecOpt:
    """Add capabilities to the bounding, effective and permitted sets."""
    wanted = list(names)

    def opt(spec: Spec) -> None:
        capabilities = _capabilities(spec)
        for key in _CAP_SETS:
            current = list(capabilities.get(key) or [])
            for name in wanted:
                if name not in current:
                    current.append(name)
            set_or_drop(capabilities, key, current)

    return opt


def with_drop_capabilities(names: Iterable[str]) -> SpecOpt:
    """Remove capabilities from the bounding, effective and permitted sets."""
    dropped = set(names)

    def opt(spec: Spec) -> None:
        capabilities = _capabilities(spec)
        for key in _CAP_SETS:
            kept = [c for c in capabilities.get(key) or [] if c not in dropped]
            set_or_drop(capabilities, key, kept)

    return opt


def with_ambient_capabilities(names: Iterable[str]) -> SpecOpt:
    """Set the inheritable and ambient capabilities (for non-root processes)."""
    wanted = list(names)

    def opt(spec: Spec) -> None:
        capabilities = _capabilities(spec)
        set_or_drop(capabilities, "inheritable", list(wanted))
        set_or_drop(capabilities, "ambient", list(wanted))

    return opt


def with_all_current_capabilities(spec: Spec) -> None:
    """Every capability this process has (containerd reads the caller's
    effective set, so a client without one never grants it)."""
    with_capabilities(_caps.current())(spec)


def with_all_known_capabilities(spec: Spec) -> None:
    """Every capability Linux 5.9 knows."""
    with_capabilities(_caps.KNOWN)(spec)


def with_new_privileges(spec: Spec) -> None:
    """Let the process gain privileges (turns ``noNewPrivileges`` off)."""
    process_section(spec).pop("noNewPrivileges", None)


def with_no_new_privileges(spec: Spec) -> None:
    """Forbid the process to gain privileges (setuid binaries, file caps)."""
    process_section(spec)["noNewPrivileges"] = True


def with_masked_paths(paths: Iterable[str] | None) -> SpecOpt:
    """Replace the paths hidden from the container (None or empty: none)."""
    listed = list(paths or [])
    return lambda spec: set_or_drop(linux_section(spec), "maskedPaths", list(listed))


def with_readonly_paths(paths: Iterable[str] | None) -> SpecOpt:
    """Replace the paths mounted read-only (None or empty: none)."""
    listed = list(paths or [])
    return lambda spec: set_or_drop(linux_section(spec), "readonlyPaths", list(listed))


def _remount_rw(spec: Spec, kind: str) -> None:
    for m in spec.get("mounts") or []:
        if m.get("type") == kind:
            m["options"] = ["rw" if o == "ro" else o for o in m.get("options") or []]


def with_writable_sysfs(spec: Spec) -> None:
    """Mount sysfs read-write."""
    _remount_rw(spec, "sysfs")


def with_writable_cgroupfs(spec: Spec) -> None:
    """Mount cgroup filesystems read-write."""
    _remount_rw(spec, "cgroup")


def with_selinux_label(label: str) -> SpecOpt:
    """Run the process with this SELinux label (``""``: none)."""
    return lambda spec: set_or_drop(process_section(spec), "selinuxLabel", label)


def with_apparmor_profile(profile: str) -> SpecOpt:
    """Run the process under this AppArmor profile, which must already be
    loaded (``""``: none)."""
    return lambda spec: set_or_drop(process_section(spec), "apparmorProfile", profile)


def with_seccomp(profile: Mapping[str, Any]) -> SpecOpt:
    """Filter system calls with this ``linux.seccomp`` profile."""
    return lambda spec: set_or_drop(linux_section(spec), "seccomp", dict(profile))


def with_seccomp_unconfined(spec: Spec) -> None:
    """No system call filter."""
    linux_section(spec).pop("seccomp", None)


#: containerd's ``WithPrivileged``: every capability the caller has, nothing
#: masked or read-only, sysfs and cgroupfs writable, no SELinux label,
#: AppArmor profile or seccomp filter.  Devices are left as they are: add
#: :data:`with_privileged_devices` for what ctr's ``--privileged`` does.
with_privileged: SpecOpt = compose(
    with_all_current_capabilities,
    with_masked_paths(None),
    with_readonly_paths(None),
    with_writable_sysfs,
    with_writable_cgroupfs,
    with_selinux_label(""),
    with_apparmor_profile(""),
    with_seccomp_unconfined,
)

#: Every host device, all allowed: what ctr ``--privileged`` adds to
#: :data:`with_privileged` (``WithAllDevicesAllowed``, ``WithHostDevices``).
with_privileged_devices: SpecOpt = compose(with_all_devices_allowed, with_host_devices)
