"""Spec options: containerd's ``oci.With*`` functions, one by one.

This module holds the options for the process (args, env, cwd, terminal),
its user, the image config, the root filesystem, hostname, mounts and
namespaces; :mod:`pycontainerd.oci.resources` those for cgroups, resources
and devices; :mod:`pycontainerd.oci.security` those for capabilities and
privileges.  :mod:`pycontainerd.oci.spec` re-exports them all.

Each option is a callable that changes a spec in place, so options compose
by listing them (:func:`pycontainerd.oci.spec.generate`) or with
:func:`compose`.  An option that takes arguments is a factory
(``with_env(["A=1"])``); one that does not is the option itself
(``with_tty``), as in containerd.  Each does what its Go namesake does to
the JSON, including what Go's ``omitempty`` leaves out: a list emptied or a
flag turned off is removed, not written as ``[]`` or ``false``.

Options that name a user (:func:`with_user`, :func:`with_image_config`...)
take the image's /etc/passwd and /etc/group as text (None when the file is
absent): this package never mounts or reads a root filesystem.  The client
reads them from the image's layers (``Image.spec_opts``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycontainerd import errdefs
from pycontainerd.oci import user as _user
from pycontainerd.oci._sections import (
    compose,
    linux_section,
    process_section,
    set_or_drop,
    user_section,
)
from pycontainerd.oci.defaults import DEFAULT_UNIX_ENV, Spec, SpecOpt, mount

__all__ = [
    "IDMapping",
    "compose",
    "parse_id_mapping",
    "replace_or_append_env",
    "with_additional_gids",
    "with_annotations",
    "with_append_additional_groups",
    "with_default_path_env",
    "with_dev_shm_size",
    "with_env",
    "with_host_hosts_file",
    "with_host_localtime",
    "with_host_namespace",
    "with_host_resolvconf",
    "with_hostname",
    "with_image_config",
    "with_linux_namespace",
    "with_mounts",
    "with_process_args",
    "with_process_cwd",
    "with_readonly_rootfs",
    "with_root_path",
    "with_rootfs_propagation",
    "with_tty",
    "with_tty_size",
    "with_uid_gid",
    "with_user",
    "with_user_id",
    "with_user_namespace",
    "with_username",
    "without_mounts",
]

# --------------------------------------------------------------------------
# The process: args, env, cwd, terminal


def with_process_args(*args: str) -> SpecOpt:
    """Replace the process's arguments."""
    return lambda spec: set_or_drop(process_section(spec), "args", list(args))


def with_process_cwd(cwd: str) -> SpecOpt:
    """Set the process's working directory."""

    def opt(spec: Spec) -> None:
        process_section(spec)["cwd"] = cwd

    return opt


def replace_or_append_env(defaults: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """containerd's ``replaceOrAppendEnvValues``: each ``KEY=value`` of
    ``overrides`` replaces the entry of ``defaults`` with that key, in place,
    or is appended; a bare ``KEY`` removes it.  Only ``defaults`` are
    looked up, so two overrides with one key are both kept."""
    results = list(defaults)
    index = {entry.split("=", 1)[0]: i for i, entry in enumerate(results)}
    for value in overrides:
        if "=" not in value:
            if value in index:
                results[index[value]] = ""  # removed below, unless set again
            continue
        key = value.split("=", 1)[0]
        if key in index:
            results[index[key]] = value
        else:
            results.append(value)
    return [entry for entry in results if entry != ""]


def with_env(env: Iterable[str]) -> SpecOpt:
    """Add ``KEY=value`` entries, replacing those with the same key (``KEY``
    alone unsets it), as containerd's ``WithEnv``."""
    items = list(env)

    def opt(spec: Spec) -> None:
        if items:
            process = process_section(spec)
            set_or_drop(process, "env", replace_or_append_env(process.get("env") or [], items))

    return opt


def with_default_path_env(spec: Spec) -> None:
    """Set ``PATH`` to containerd's default."""
    with_env(DEFAULT_UNIX_ENV)(spec)


def with_tty(spec: Spec) -> None:
    """Give the process a terminal, and append ``TERM=xterm`` (containerd's
    ``WithTTY`` appends, even when TERM is already set)."""
    process = process_section(spec)
    process["terminal"] = True
    if "linux" in spec:
        process["env"] = [*(process.get("env") or []), "TERM=xterm"]


def with_tty_size(width: int, height: int) -> SpecOpt:
    """Set the terminal's size."""

    def opt(spec: Spec) -> None:
        process_section(spec)["consoleSize"] = {"height": height, "width": width}

    return opt


# --------------------------------------------------------------------------
# The image


def with_image_config(
    config: Mapping[str, Any],
    args: Sequence[str] = (),
    *,
    passwd: str | None = None,
    group: str | None = None,
) -> SpecOpt:
    """Run what the image config says (containerd's ``WithImageConfigArgs``).

    ``config`` is the decoded image config JSON; its ``config`` object gives
    ``Env`` (the defaults: the spec's own env wins, and with no ``Env`` the
    default PATH is used), ``Entrypoint`` + ``Cmd`` (``args``, when given,
    replace ``Cmd``), ``WorkingDir`` (``/`` when empty) and ``User``,
    resolved in ``passwd`` and ``group``, the image's /etc/passwd and
    /etc/group (None when absent), with the user's supplementary groups.
    """
    run = config.get("config") or {}
    entrypoint = [str(a) for a in run.get("Entrypoint") or []]
    cmd = list(args) if args else [str(a) for a in run.get("Cmd") or []]
    image_env = [str(e) for e in run.get("Env") or []] or list(DEFAULT_UNIX_ENV)
    cwd = str(run.get("WorkingDir") or "/")
    user = str(run.get("User") or "")

    def opt(spec: Spec) -> None:
        process = process_section(spec)
        if "linux" not in spec:
            raise errdefs.InvalidArgument("spec does not contain Linux or Windows section")
        set_or_drop(process, "env", replace_or_append_env(image_env, process.get("env") or []))
        set_or_drop(process, "args", [*entrypoint, *cmd])
        process["cwd"] = cwd
        if user:
            with_user(user, passwd=passwd, group=group)(spec)
            with_additional_gids(str(user_section(spec)["uid"]), passwd=passwd, group=group)(spec)
        else:
            with_additional_gids("root", passwd=passwd, group=group)(spec)

    return opt


# --------------------------------------------------------------------------
# The user


def _set_user(spec: Spec, uid: int, gid: int, additional: list[int] | None = None) -> None:
    """Set the ids, then put the primary gid among the additional gids
    (containerd 1.6.20's ``ensureAdditionalGids``)."""
    user = user_section(spec)
    user["uid"], user["gid"] = uid, gid
    user["additionalGids"] = _user.ensure_primary(gid, additional or [])


def with_uid_gid(uid: int, gid: int) -> SpecOpt:
    """Run as ``uid``:``gid`` with no other groups than ``gid``."""
    return lambda spec: _set_user(spec, uid, gid)


def with_user(user: str, *, passwd: str | None = None, group: str | None = None) -> SpecOpt:
    """Run as ``user`` — ``name``, ``uid``, ``name:group``, ``uid:gid``,
    ``uid:group`` or ``name:gid`` — resolved in the image's ``passwd`` and
    ``group`` texts (containerd's ``WithUser``).  A name that is not there
    is NotFound; a uid that is not there runs with gid 0."""

    def opt(spec: Spec) -> None:
        uid, gid = _user.uid_gid(user, passwd, group)
        _set_user(spec, uid, gid)

    return opt


def with_user_id(uid: int, *, passwd: str | None = None) -> SpecOpt:
    """Run as ``uid`` with its primary group from ``passwd`` (0 when missing)."""
    return with_user(str(uid), passwd=passwd)


def with_username(name: str, *, passwd: str | None = None) -> SpecOpt:
    """Run as the account ``name`` of ``passwd`` (NotFound when missing)."""

    def opt(spec: Spec) -> None:
        account = _user.user_by_name(name, passwd)
        _set_user(spec, account.id & 0xFFFFFFFF, account.gid & 0xFFFFFFFF)

    return opt


def with_additional_gids(
    user: str, *, passwd: str | None = None, group: str | None = None
) -> SpecOpt:
    """Set the additional groups to those ``group`` lists ``user`` (a name,
    or a uid named through ``passwd``) in, plus the primary group
    (containerd's ``WithAdditionalGIDs``)."""

    def opt(spec: Spec) -> None:
        current = user_section(spec)
        extra = _user.additional_gids(user, passwd, group)
        current["additionalGids"] = _user.ensure_primary(current.get("gid", 0), extra)

    return opt


_DECIMAL = re.compile(r"[0-9]+")


def with_append_additional_groups(*groups: str, group: str | None = None) -> SpecOpt:
    """Add groups, by gid or by a name looked up in ``group`` (containerd's
    ``WithAppendAdditionalGroups``); an unknown name is NotFound."""

    def opt(spec: Spec) -> None:
        if group is None:
            raise errdefs.NotFound("the image has no /etc/group")
        by_name = {g.name: g.id for g in _user.parse_group(group)}
        gids: list[int] = []
        for name in groups:
            if _DECIMAL.fullmatch(name) and int(name) < 1 << 32:
                gids.append(int(name))
            elif name in by_name:
                gids.append(by_name[name] & 0xFFFFFFFF)
            else:
                raise errdefs.NotFound(f"unable to find group {name}")
        current = user_section(spec)
        extra = [*(current.get("additionalGids") or []), *gids]
        current["additionalGids"] = _user.ensure_primary(current.get("gid", 0), extra)

    return opt


# --------------------------------------------------------------------------
# Root filesystem, hostname, mounts


def with_root_path(path: str) -> SpecOpt:
    """Use the root filesystem at ``path`` (containerd's ``WithRootFSPath``)."""

    def opt(spec: Spec) -> None:
        spec.setdefault("root", {})["path"] = path

    return opt


def with_readonly_rootfs(spec: Spec) -> None:
    """Mount the root filesystem read-only."""
    spec.setdefault("root", {})["readonly"] = True


def with_rootfs_propagation(propagation: str) -> SpecOpt:
    """Set the root mount's propagation (``shared``, ``slave``, ``private``...)."""
    return lambda spec: set_or_drop(linux_section(spec), "rootfsPropagation", propagation)


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    """Add or replace annotations."""
    added = dict(annotations)

    def opt(spec: Spec) -> None:
        set_or_drop(spec, "annotations", {**(spec.get("annotations") or {}), **added})

    return opt


def with_hostname(name: str) -> SpecOpt:
    """Set the container's hostname (in its own uts namespace)."""
    return lambda spec: set_or_drop(spec, "hostname", name)


def with_mounts(mounts: Iterable[Mapping[str, Any]]) -> SpecOpt:
    """Append mounts, each ``{destination, type, source, options}``."""
    added = [dict(m) for m in mounts]

    def opt(spec: Spec) -> None:
        spec["mounts"] = [*(spec.get("mounts") or []), *(dict(m) for m in added)]

    return opt


def without_mounts(*destinations: str) -> SpecOpt:
    """Remove the mounts at ``destinations`` (containerd's ``WithoutMounts``)."""
    wanted = set(destinations)

    def opt(spec: Spec) -> None:
        kept = [
            m
            for m in spec.get("mounts") or []
            if posixpath.normpath(m.get("destination", "")) not in wanted
        ]
        set_or_drop(spec, "mounts", kept)

    return opt


def with_host_hosts_file(spec: Spec) -> None:
    """Bind the host's /etc/hosts read-only."""
    spec["mounts"] = [
        *(spec.get("mounts") or []),
        mount("/etc/hosts", "bind", "/etc/hosts", ["rbind", "ro"]),
    ]


def with_host_resolvconf(spec: Spec) -> None:
    """Bind the host's /etc/resolv.conf read-only."""
    spec["mounts"] = [
        *(spec.get("mounts") or []),
        mount("/etc/resolv.conf", "bind", "/etc/resolv.conf", ["rbind", "ro"]),
    ]


def with_host_localtime(spec: Spec) -> None:
    """Bind the host's /etc/localtime read-only."""
    spec["mounts"] = [
        *(spec.get("mounts") or []),
        mount("/etc/localtime", "bind", "/etc/localtime", ["rbind", "ro"]),
    ]


def with_dev_shm_size(kb: int) -> SpecOpt:
    """Set the size of the /dev/shm tmpfs, in KiB (FailedPrecondition without one)."""

    def opt(spec: Spec) -> None:
        for m in spec.get("mounts") or []:
            if (
                posixpath.normpath(m.get("destination", "")) == "/dev/shm"
                and m.get("source") == "shm"
                and m.get("type") == "tmpfs"
            ):
                options = [o for o in m.get("options") or [] if not o.startswith("size=")]
                m["options"] = [*options, f"size={kb}k"]
                return
        raise errdefs.FailedPrecondition("no /dev/shm mount specified")

    return opt


# --------------------------------------------------------------------------
# Namespaces


def with_host_namespace(kind: str) -> SpecOpt:
    """Share the host's namespace of ``kind`` (``network``, ``pid``...)."""

    def opt(spec: Spec) -> None:
        linux = linux_section(spec)
        namespaces = list(linux.get("namespaces") or [])
        for i, ns in enumerate(namespaces):
            if ns.get("type") == kind:
                del namespaces[i]
                break
        set_or_drop(linux, "namespaces", namespaces)

    return opt


def with_linux_namespace(kind: str, path: str = "") -> SpecOpt:
    """Use a namespace of ``kind``: a new one, or the one at ``path`` (ctr's
    ``--with-ns kind:path``).  It replaces one of the same kind in place."""
    entry: dict[str, Any] = {"type": kind}
    if path:
        entry["path"] = path

    def opt(spec: Spec) -> None:
        linux = linux_section(spec)
        namespaces = list(linux.get("namespaces") or [])
        for i, ns in enumerate(namespaces):
            if ns.get("type") == kind:
                namespaces[i] = dict(entry)
                break
        else:
            namespaces.append(dict(entry))
        linux["namespaces"] = namespaces

    return opt


@dataclass(frozen=True, slots=True)
class IDMapping:
    """A user namespace mapping: ``size`` ids from ``container_id`` inside
    are ``host_id``... outside."""

    container_id: int
    host_id: int
    size: int

    def to_spec(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


# Go's strconv.ParseUint(s, 0, 32) syntax: decimal, 0x hex, 0o or 0 octal, 0b binary.
_UINT = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*")


def _parse_uint32(text: str, what: str) -> int:
    if _UINT.fullmatch(text) is None:
        raise errdefs.InvalidArgument(f"invalid {what} for user namespace remapping: {text!r}")
    octal = text[0] == "0" and (text == "0" or text[1:].isdigit())
    value = int(text, 8) if octal else int(text, 0)
    if value >= 1 << 32:
        raise errdefs.InvalidArgument(f"invalid {what} for user namespace remapping: {text!r}")
    return value


def parse_id_mapping(text: str) -> IDMapping:
    """``container-id:host-id:size``, as ctr's ``--uidmap`` and ``--gidmap``."""
    parts = text.split(":", 3)
    if len(parts) != 3:
        raise errdefs.InvalidArgument(
            "user namespace mappings require the format `container-id:host-id:size`"
        )
    return IDMapping(
        _parse_uint32(parts[0], "container id"),
        _parse_uint32(parts[1], "host id"),
        _parse_uint32(parts[2], "size"),
    )


def with_user_namespace(uid_maps: Iterable[IDMapping], gid_maps: Iterable[IDMapping]) -> SpecOpt:
    """Run in a new user namespace with these uid and gid mappings
    (appended to any already there; containerd's ``WithUserNamespace``).

    The root filesystem must be owned by the mapped ids, or root in the
    container owns nothing in it: ctr ``--uidmap`` pairs this with a
    remapped snapshot (a copy chowned to the host ids), which is a container
    option, not a spec one.
    """
    uids = [m.to_spec() for m in uid_maps]
    gids = [m.to_spec() for m in gid_maps]

    def opt(spec: Spec) -> None:
        linux = linux_section(spec)
        namespaces = list(linux.get("namespaces") or [])
        if not any(ns.get("type") == "user" for ns in namespaces):
            namespaces.append({"type": "user"})
        linux["namespaces"] = namespaces
        set_or_drop(linux, "uidMappings", [*(linux.get("uidMappings") or []), *uids])
        set_or_drop(linux, "gidMappings", [*(linux.get("gidMappings") or []), *gids])

    return opt
