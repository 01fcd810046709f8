"""The default spec, spec generation and packing (field order, Go's escaping)."""

from __future__ import annotations

import json

import pytest

from pycontainerd.oci import caps, defaults
from pycontainerd.oci import spec as oci

pytestmark = pytest.mark.unit


def test_default_spec_has_containerds_namespaces_mounts_and_cgroup() -> None:
    spec = oci.default_spec("prod", "web")
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["root"] == {"path": "rootfs"}
    linux = spec["linux"]
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "network"]
    assert linux["cgroupsPath"] == "/prod/web"
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/run",
    ]
    assert "ro" in spec["mounts"][5]["options"]


def test_default_process_is_root_in_slash_with_default_caps_and_nofile_1024() -> None:
    process = oci.default_spec("ns", "c")["process"]
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["cwd"] == "/"
    assert process["noNewPrivileges"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    for key in ("bounding", "effective", "permitted"):
        assert process["capabilities"][key] == list(caps.DEFAULT)
    assert "CAP_SYS_ADMIN" not in caps.DEFAULT


def test_default_device_cgroup_denies_all_but_the_standard_devices() -> None:
    rules = oci.default_spec("ns", "c")["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["major"], r.get("minor")) for r in rules[1:]}
    # null, random, full, tty, zero, urandom, console, all pts, ptmx
    assert allowed == {(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2)}
    assert all(r["allow"] and r["type"] == "c" and r["access"] == "rwm" for r in rules[1:])


def test_default_masked_and_readonly_paths() -> None:
    linux = oci.default_spec("ns", "c")["linux"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/sys/firmware" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"]  # fmt: skip


def test_default_specs_share_no_lists() -> None:
    a, b = oci.default_spec("ns", "a"), oci.default_spec("ns", "b")
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    a["mounts"][0]["options"].append("ro")
    assert "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["bounding"]
    assert "ro" not in b["mounts"][0]["options"]


def test_cgroup_path_is_joined_and_cleaned_as_go_does() -> None:
    assert defaults.default_spec("a", "../../x")["linux"]["cgroupsPath"] == "/x"
    assert defaults.default_spec("", "b")["linux"]["cgroupsPath"] == "/b"


def test_generate_applies_options_in_order() -> None:
    spec = oci.generate("ns", "c", oci.with_process_cwd("/a"), oci.with_process_cwd("/b"))
    assert spec["process"]["cwd"] == "/b"


def test_generate_orders_fields_as_go_structs_declare_them() -> None:
    spec = oci.generate(
        "ns",
        "c",
        oci.with_annotations({"z": "1", "a": "2"}),
        oci.with_tty,
        oci.with_cpu_cfs(10, 20),
        oci.with_cpu_shares(5),
        oci.with_hostname("h"),
        oci.with_process_args("sh"),
    )
    assert list(spec) == ["ociVersion", "process", "root", "hostname", "mounts", "annotations",
                          "linux"]  # fmt: skip
    assert list(spec["process"])[:4] == ["terminal", "user", "args", "env"]
    assert list(spec["annotations"]) == ["a", "z"]
    assert list(spec["linux"]["resources"]["cpu"]) == ["shares", "quota", "period"]


def test_canonical_keeps_unknown_fields_after_known_ones() -> None:
    ordered = oci.canonical({"x-extra": 1, "linux": {}, "ociVersion": "1"})
    assert list(ordered) == ["ociVersion", "linux", "x-extra"]


def test_to_any_round_trips_under_containerds_type_url() -> None:
    spec = oci.generate("ns", "c", oci.with_process_args("echo", "é"))
    packed = oci.to_any(spec)
    assert packed.type_url == "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    assert oci.from_any(packed) == spec


def test_to_json_escapes_html_characters_as_go_does() -> None:
    data = oci.to_json({"process": {"args": ["a && b <c>", "\u2028", "é"]}})
    assert b"\\u0026\\u0026" in data and b"\\u003cc\\u003e" in data and b"\\u2028" in data
    assert "é".encode() in data  # UTF-8 as is, not \u00e9
    assert json.loads(data) == {"process": {"args": ["a && b <c>", "\u2028", "é"]}}


def test_spec_module_still_exports_every_option() -> None:
    from pycontainerd.oci import opts, resources, security

    for module in (opts, resources, security):
        for name in module.__all__:
            assert getattr(oci, name) is getattr(module, name)
            assert name in oci.__all__
    assert len(set(oci.__all__)) == len(oci.__all__)
