"""Each spec option on its own, against containerd's behaviour for it.

The same options are checked against specs Debian's containerd stores for
ctr's flags in tests/interop/test_spec_containerd.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.oci import caps
from pycontainerd.oci import spec as oci

pytestmark = pytest.mark.unit


def gen(*opts: oci.SpecOpt) -> dict[str, Any]:
    return oci.generate("ns", "c", *opts)


# -- process


def test_process_args_replace_and_empty_args_are_left_out() -> None:
    assert gen(oci.with_process_args("sh", "-c", "x"))["process"]["args"] == ["sh", "-c", "x"]
    assert "args" not in gen(oci.with_process_args("a"), oci.with_process_args())["process"]


def test_process_cwd() -> None:
    assert gen(oci.with_process_cwd("/srv"))["process"]["cwd"] == "/srv"


def test_env_replaces_by_key_in_place_and_appends_new_keys() -> None:
    spec = gen(oci.with_env(["A=1", "B=2"]), oci.with_env(["A=3", "C=4"]))
    assert spec["process"]["env"] == ["A=3", "B=2", "C=4"]


def test_env_bare_key_unsets_and_one_call_keeps_its_own_duplicates() -> None:
    spec = gen(oci.with_env(["A=1", "B=2"]), oci.with_env(["A", "D=1", "D=2"]))
    # containerd looks keys up among the existing entries only.
    assert spec["process"]["env"] == ["B=2", "D=1", "D=2"]
    assert "env" not in gen(oci.with_env(["A=1"]), oci.with_env(["A"]))["process"]
    assert "env" not in gen(oci.with_env([]))["process"]


def test_replace_or_append_env_unset_then_set_again_keeps_the_value() -> None:
    assert oci.replace_or_append_env(["A=1", "B=2"], ["A", "A=9"]) == ["A=9", "B=2"]


def test_default_path_env() -> None:
    assert gen(oci.with_default_path_env)["process"]["env"] == list(oci.DEFAULT_UNIX_ENV)


def test_tty_sets_terminal_and_appends_term_even_when_set() -> None:
    process = gen(oci.with_env(["TERM=vt100"]), oci.with_tty)["process"]
    assert process["terminal"] is True
    assert process["env"] == ["TERM=vt100", "TERM=xterm"]


def test_tty_size() -> None:
    size = gen(oci.with_tty_size(80, 24))["process"]["consoleSize"]
    assert size == {"height": 24, "width": 80}


# -- image config


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29:app\n"


def test_image_config_merges_env_and_sets_entrypoint_cmd_cwd_user() -> None:
    config = {
        "config": {
            "Env": ["PATH=/bin", "A=image", "KEEP=1"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "WorkingDir": "/srv",
            "User": "app",
        }
    }
    spec = gen(
        oci.with_env(["A=flag", "NEW=1"]),
        oci.with_image_config(config, passwd=PASSWD, group=GROUP),
    )
    process = spec["process"]
    assert process["env"] == ["PATH=/bin", "A=flag", "KEEP=1", "NEW=1"]
    assert process["args"] == ["/bin/sh", "-c", "echo hi"]
    assert process["cwd"] == "/srv"
    assert process["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [1001, 10, 29]}


def test_image_config_args_replace_cmd_and_defaults_fill_the_gaps() -> None:
    config = {"config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["sh"]}}
    process = gen(oci.with_image_config(config, ["ls", "/"]))["process"]
    assert process["args"] == ["/bin/busybox", "ls", "/"]
    assert process["env"] == list(oci.DEFAULT_UNIX_ENV)
    assert process["cwd"] == "/"
    # No USER: root, with the groups the image's /etc/group lists root in.
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    root = gen(oci.with_image_config(config, passwd=PASSWD, group=GROUP))["process"]["user"]
    assert root["additionalGids"] == [0, 10]


def test_image_config_with_an_unknown_user_name_fails() -> None:
    with pytest.raises(errdefs.NotFound, match="nobody"):
        gen(oci.with_image_config({"config": {"User": "nobody"}}, passwd=PASSWD, group=GROUP))


# -- user


def test_user_by_name_uid_and_pairs() -> None:
    def user(value: str) -> Any:
        return gen(oci.with_user(value, passwd=PASSWD, group=GROUP))["process"]["user"]

    assert user("app") == {"uid": 1000, "gid": 1001, "additionalGids": [1001]}
    assert user("1000") == {"uid": 1000, "gid": 1001, "additionalGids": [1001]}
    assert user("4242") == {"uid": 4242, "gid": 0, "additionalGids": [0]}
    assert user("app:wheel") == {"uid": 1000, "gid": 10, "additionalGids": [10]}
    assert user("7:8") == {"uid": 7, "gid": 8, "additionalGids": [8]}
    assert user("root:1001")["gid"] == 1001
    with pytest.raises(errdefs.NotFound, match="nogroup"):
        user("app:nogroup")
    with pytest.raises(errdefs.InvalidArgument, match="invalid USER value"):
        user("a:b:c")


def test_user_resets_additional_gids_and_then_adds_them() -> None:
    spec = gen(
        oci.with_user("app", passwd=PASSWD, group=GROUP),
        oci.with_additional_gids("app", passwd=PASSWD, group=GROUP),
    )
    assert spec["process"]["user"]["additionalGids"] == [1001, 10, 29]
    again = gen(oci.with_additional_gids("app", group=GROUP), oci.with_user("7:8"))
    assert again["process"]["user"]["additionalGids"] == [8]


def test_uid_gid_user_id_and_username() -> None:
    assert gen(oci.with_uid_gid(5, 6))["process"]["user"] == {
        "uid": 5,
        "gid": 6,
        "additionalGids": [6],
    }
    assert gen(oci.with_user_id(1000, passwd=PASSWD))["process"]["user"]["gid"] == 1001
    assert gen(oci.with_user_id(1000))["process"]["user"]["gid"] == 0
    assert gen(oci.with_username("app", passwd=PASSWD))["process"]["user"]["uid"] == 1000
    with pytest.raises(errdefs.NotFound):
        gen(oci.with_username("app", passwd=None))


def test_append_additional_groups_by_gid_and_name() -> None:
    spec = gen(
        oci.with_uid_gid(1, 2), oci.with_append_additional_groups("audio", "77", group=GROUP)
    )
    assert spec["process"]["user"]["additionalGids"] == [2, 29, 77]
    with pytest.raises(errdefs.NotFound, match="unable to find group"):
        gen(oci.with_append_additional_groups("nope", group=GROUP))


# -- root, hostname, mounts


def test_root_path_and_readonly_rootfs() -> None:
    root = gen(oci.with_root_path("/r"), oci.with_readonly_rootfs)["root"]
    assert root == {"path": "/r", "readonly": True}


def test_rootfs_propagation() -> None:
    assert gen(oci.with_rootfs_propagation("rslave"))["linux"]["rootfsPropagation"] == "rslave"


def test_hostname_set_and_cleared() -> None:
    assert gen(oci.with_hostname("box"))["hostname"] == "box"
    assert "hostname" not in gen(oci.with_hostname("box"), oci.with_hostname(""))


def test_mounts_are_appended_and_removed_by_destination() -> None:
    bind = {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "ro"]}
    spec = gen(oci.with_mounts([bind]))
    assert spec["mounts"][-1] == bind
    spec = gen(oci.with_mounts([bind]), oci.without_mounts("/data", "/run"))
    assert [m["destination"] for m in spec["mounts"]][-2:] == ["/dev/mqueue", "/sys"]


def test_host_files_are_bound_read_only() -> None:
    spec = gen(oci.with_host_hosts_file, oci.with_host_resolvconf, oci.with_host_localtime)
    extra = spec["mounts"][-3:]
    assert [m["destination"] for m in extra] == ["/etc/hosts", "/etc/resolv.conf", "/etc/localtime"]
    assert all(m["type"] == "bind" and m["options"] == ["rbind", "ro"] for m in extra)


def test_dev_shm_size_replaces_the_size_option() -> None:
    shm = gen(oci.with_dev_shm_size(1024))["mounts"][3]
    assert shm["options"] == ["nosuid", "noexec", "nodev", "mode=1777", "size=1024k"]
    with pytest.raises(errdefs.FailedPrecondition, match="no /dev/shm"):
        gen(oci.without_mounts("/dev/shm"), oci.with_dev_shm_size(1))


# -- namespaces


def test_host_namespace_removes_only_that_namespace() -> None:
    spec = gen(oci.with_host_namespace("network"), oci.with_host_namespace("pid"))
    assert [n["type"] for n in spec["linux"]["namespaces"]] == ["ipc", "uts", "mount"]


def test_linux_namespace_replaces_in_place_or_appends() -> None:
    spec = gen(
        oci.with_linux_namespace("ipc", "/proc/1/ns/ipc"),
        oci.with_linux_namespace("cgroup"),
    )
    namespaces = spec["linux"]["namespaces"]
    assert namespaces[1] == {"type": "ipc", "path": "/proc/1/ns/ipc"}
    assert namespaces[-1] == {"type": "cgroup"}


def test_user_namespace_adds_the_namespace_once_and_appends_mappings() -> None:
    uid = oci.parse_id_mapping("0:100000:65536")
    gid = oci.parse_id_mapping("0:200000:65536")
    spec = gen(
        oci.with_user_namespace([uid], [gid]),
        oci.with_user_namespace([oci.IDMapping(65536, 1000, 1)], []),
    )
    linux = spec["linux"]
    assert [n["type"] for n in linux["namespaces"]].count("user") == 1
    assert linux["uidMappings"] == [
        {"containerID": 0, "hostID": 100000, "size": 65536},
        {"containerID": 65536, "hostID": 1000, "size": 1},
    ]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]


def test_parse_id_mapping_takes_gos_number_syntax_and_rejects_the_rest() -> None:
    assert oci.parse_id_mapping("0x10:010:0b11") == oci.IDMapping(16, 8, 3)
    for bad in ("1:2", "1:2:3:4", "a:1:1", "-1:1:1", "1:4294967296:1", "1_0:1:1", " 1:1:1"):
        with pytest.raises(errdefs.InvalidArgument):
            oci.parse_id_mapping(bad)


# -- cgroups and resources


def test_cgroup_path_set_or_left_to_the_runtime() -> None:
    assert gen(oci.with_cgroup("/my/cg"))["linux"]["cgroupsPath"] == "/my/cg"
    assert "cgroupsPath" not in gen(oci.with_cgroup(""))["linux"]


def test_memory_limit_swap_and_pids() -> None:
    resources = gen(
        oci.with_memory_limit(1 << 30), oci.with_memory_swap(-1), oci.with_pids_limit(100)
    )["linux"]["resources"]
    assert resources["memory"] == {"limit": 1 << 30, "swap": -1}
    assert resources["pids"] == {"limit": 100}


def test_cpus_are_a_quota_over_a_100ms_period_like_ctr() -> None:
    assert gen(oci.with_cpus(1.5))["linux"]["resources"]["cpu"] == {
        "quota": 150000,
        "period": 100000,
    }
    assert gen(oci.with_cpus(0.333))["linux"]["resources"]["cpu"]["quota"] == 33300
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(errdefs.InvalidArgument):
            oci.with_cpus(bad)


def test_cpu_shares_cfs_and_cpusets() -> None:
    cpu = gen(
        oci.with_cpu_shares(512),
        oci.with_cpu_cfs(5000, 10000),
        oci.with_cpuset_cpus("0-1"),
        oci.with_cpuset_mems("0"),
    )["linux"]["resources"]["cpu"]
    assert cpu == {"shares": 512, "quota": 5000, "period": 10000, "cpus": "0-1", "mems": "0"}


def test_rlimits_replace_by_type_and_append() -> None:
    spec = gen(
        oci.with_rlimits(
            oci.Rlimit("RLIMIT_NOFILE", hard=4096, soft=2048), oci.Rlimit("RLIMIT_NPROC", 10, 10)
        )
    )
    assert spec["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 2048},
        {"type": "RLIMIT_NPROC", "hard": 10, "soft": 10},
    ]
    with pytest.raises(errdefs.InvalidArgument):
        oci.with_rlimits(oci.Rlimit("NOFILE", 1, 1))
    with pytest.raises(errdefs.InvalidArgument):
        oci.with_rlimits(oci.Rlimit("RLIMIT_NOFILE", hard=1, soft=2))


# -- devices


def test_device_from_a_node_gets_a_node_and_a_cgroup_rule() -> None:
    spec = gen(oci.with_devices("/dev/null", "/dev/mynull", "rw"))
    st = os.stat("/dev/null")
    assert spec["linux"]["devices"] == [
        {
            "path": "/dev/mynull",
            "type": "c",
            "major": 1,
            "minor": 3,
            "fileMode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
    ]
    rule = spec["linux"]["resources"]["devices"][-1]
    assert rule == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    linux_device = gen(oci.with_linux_device("/dev/zero"))["linux"]
    assert linux_device["devices"][0]["path"] == "/dev/zero"
    assert linux_device["resources"]["devices"][-1]["minor"] == 5


def test_devices_refuses_what_is_not_a_device(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(errdefs.InvalidArgument, match="not a device node"):
        gen(oci.with_devices(str(tmp_path / "file")))
    with pytest.raises(errdefs.NotFound):
        gen(oci.with_devices(str(tmp_path / "missing")))
    # A directory without devices adds nothing.
    assert "devices" not in gen(oci.with_devices(str(tmp_path)))["linux"]


def test_linux_devices_add_nodes_without_rules() -> None:
    node = {"path": "/dev/x", "type": "c", "major": 9, "minor": 9}
    spec = gen(oci.with_linux_devices([node]))
    assert spec["linux"]["devices"] == [node]
    assert len(spec["linux"]["resources"]["devices"]) == 10


def test_device_cgroup_presets() -> None:
    everything = gen(oci.with_all_devices_allowed)["linux"]["resources"]["devices"]
    assert everything == [{"allow": True, "access": "rwm"}]
    assert "devices" not in gen(oci.with_parent_cgroup_devices)["linux"]["resources"]
    doubled = gen(oci.with_default_unix_devices)["linux"]["resources"]["devices"]
    assert len(doubled) == 1 + 2 * 9


def test_host_devices_lists_dev_nodes_but_not_console_or_pts() -> None:
    devices = gen(oci.with_host_devices)["linux"]["devices"]
    paths = [d["path"] for d in devices]
    assert "/dev/null" in paths
    assert "/dev/console" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in paths)


# -- capabilities and privileges


def test_add_and_drop_capabilities_in_the_three_sets() -> None:
    spec = gen(
        oci.with_add_capabilities(["CAP_SYS_ADMIN", "CAP_CHOWN"]),
        oci.with_drop_capabilities(["CAP_KILL"]),
    )
    for key in ("bounding", "effective", "permitted"):
        current = spec["process"]["capabilities"][key]
        assert current[-1] == "CAP_SYS_ADMIN" and current.count("CAP_CHOWN") == 1
        assert "CAP_KILL" not in current


def test_dropping_every_capability_leaves_the_sets_out() -> None:
    spec = gen(oci.with_drop_capabilities(caps.DEFAULT))
    assert spec["process"]["capabilities"] == {}
    assert gen(oci.with_capabilities([]))["process"]["capabilities"] == {}


def test_capabilities_ambient_and_known() -> None:
    spec = gen(oci.with_capabilities(["CAP_KILL"]), oci.with_ambient_capabilities(["CAP_KILL"]))
    assert spec["process"]["capabilities"] == {
        "bounding": ["CAP_KILL"],
        "effective": ["CAP_KILL"],
        "inheritable": ["CAP_KILL"],
        "permitted": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
    }
    known = gen(oci.with_all_known_capabilities)["process"]["capabilities"]["bounding"]
    assert known == list(caps.KNOWN) and len(known) == 41


def test_new_privileges_and_no_new_privileges() -> None:
    assert "noNewPrivileges" not in gen(oci.with_new_privileges)["process"]
    spec = gen(oci.with_new_privileges, oci.with_no_new_privileges)
    assert spec["process"]["noNewPrivileges"] is True


def test_privileged_has_the_callers_caps_and_no_masks() -> None:
    spec = gen(
        oci.with_seccomp({"defaultAction": "SCMP_ACT_ERRNO"}),
        oci.with_apparmor_profile("p"),
        oci.with_selinux_label("l"),
        oci.with_privileged,
    )
    assert spec["process"]["capabilities"]["bounding"] == caps.current()
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert "seccomp" not in spec["linux"]
    assert "apparmorProfile" not in spec["process"] and "selinuxLabel" not in spec["process"]
    sysfs = next(m for m in spec["mounts"] if m["type"] == "sysfs")
    assert sysfs["options"] == ["nosuid", "noexec", "nodev", "rw"]
    # Devices are ctr's addition, not WithPrivileged's.
    assert spec["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    devices = gen(oci.with_privileged, oci.with_privileged_devices)["linux"]
    assert devices["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in devices["devices"])


def test_masked_and_readonly_paths_replace() -> None:
    linux = gen(oci.with_masked_paths(["/proc/x"]), oci.with_readonly_paths([]))["linux"]
    assert linux["maskedPaths"] == ["/proc/x"]
    assert "readonlyPaths" not in linux


def test_writable_cgroupfs_flips_ro_on_cgroup_mounts_only() -> None:
    cgroup = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["ro", "nosuid"]}  # fmt: skip
    spec = gen(oci.with_mounts([cgroup]), oci.with_writable_cgroupfs)
    assert spec["mounts"][-1]["options"] == ["rw", "nosuid"]
    assert "ro" in next(m for m in spec["mounts"] if m["type"] == "sysfs")["options"]


def test_seccomp_set_and_unconfined() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    assert gen(oci.with_seccomp(profile))["linux"]["seccomp"] == profile
    assert "seccomp" not in gen(oci.with_seccomp(profile), oci.with_seccomp_unconfined)["linux"]


def test_annotations_add_and_replace_and_empty_adds_nothing() -> None:
    spec = gen(oci.with_annotations({"a": "1", "b": "2"}), oci.with_annotations({"a": "3"}))
    assert spec["annotations"] == {"a": "3", "b": "2"}
    assert "annotations" not in gen(oci.with_annotations({}))


def test_compose_applies_in_order() -> None:
    both = oci.compose(oci.with_process_cwd("/a"), oci.with_process_cwd("/b"))
    assert gen(both)["process"]["cwd"] == "/b"
