"""containerd's default seccomp profile, as it follows the capabilities.

The whole profile is compared with the one Debian's containerd stores for
``ctr --seccomp`` in tests/interop/test_spec_containerd.py."""

from __future__ import annotations

from typing import Any

import pytest

from pycontainerd.oci import caps, seccomp
from pycontainerd.oci import spec as oci

pytestmark = pytest.mark.unit


def _rules(profile: dict[str, Any]) -> list[tuple[str, ...]]:
    return [tuple(rule["names"]) for rule in profile["syscalls"]]


def test_default_profile_denies_by_default_and_allows_the_common_calls() -> None:
    profile = seccomp.default_profile(list(caps.DEFAULT), goarch="amd64", kernel="6.1.0")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = profile["syscalls"][0]["names"]
    assert {"read", "write", "execve", "openat2"} <= set(allowed)
    assert not {"mount", "reboot", "kexec_load"} & set(allowed)


def test_without_sys_admin_clone_cannot_make_namespaces_and_clone3_is_enosys() -> None:
    profile = seccomp.default_profile(list(caps.DEFAULT), goarch="amd64", kernel="6.1.0")
    clone, clone3 = profile["syscalls"][-2:]
    assert clone["names"] == ["clone"]
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    s390 = seccomp.default_profile([], goarch="s390x", kernel="6.1.0")
    assert s390["syscalls"][-2]["args"][0]["index"] == 1


def test_capabilities_add_their_calls_in_bounding_order() -> None:
    profile = seccomp.default_profile(
        ["CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_KILL"], goarch="amd64", kernel="6.1.0"
    )
    rules = _rules(profile)
    ptrace_at = rules.index(("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                             "process_vm_writev", "ptrace"))  # fmt: skip
    admin_at = next(i for i, r in enumerate(rules) if "mount" in r)
    assert ptrace_at < admin_at
    assert ("clone3",) not in rules  # admin: clone and clone3 come with CAP_SYS_ADMIN


def test_ptrace_needs_linux_4_8_and_arch_calls_follow_the_arch() -> None:
    old = _rules(seccomp.default_profile([], goarch="amd64", kernel="4.4.0"))
    new = _rules(seccomp.default_profile([], goarch="amd64", kernel="4.8.0-1"))
    assert ("ptrace",) not in old and ("ptrace",) in new
    assert ("arch_prctl", "modify_ldt") in new
    unknown = seccomp.default_profile([], goarch="riscv64", kernel="6.1.0")
    assert "architectures" not in unknown


def test_with_default_seccomp_reads_the_specs_bounding_set() -> None:
    plain = oci.generate("ns", "c", oci.with_default_seccomp)["linux"]["seccomp"]
    admin = oci.generate(
        "ns", "c", oci.with_add_capabilities(["CAP_SYS_ADMIN"]), oci.with_default_seccomp
    )["linux"]["seccomp"]
    assert plain["syscalls"][-1]["names"] == ["clone3"]
    assert admin["syscalls"][-1]["names"][0] == "bpf"
    # Privileged clears any filter; a profile set after it stays.
    cleared = oci.generate("ns", "c", oci.with_default_seccomp, oci.with_privileged)
    assert "seccomp" not in cleared["linux"]
