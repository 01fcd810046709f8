"""Unpacking an image: the pure half (names, labels, layer pairing, spec).

An image is unpacked into a snapshotter when each of its layers has been
applied, in order, into a snapshot committed under the layer's chain ID
(:mod:`pycontainerd.images.identity`).  The steps that talk to a daemon
(stat, prepare, apply through the diff service, commit, label content) are
in :mod:`pycontainerd.client._async.image` so that the sync client gets
them too; async callers use ``pycontainerd.client._async.image.unpack``
(``client._sync.image.unpack`` in sync code).  This module holds what both
need and what can be tested without a daemon: which blob goes with which
diff ID, the names and labels containerd uses, and the OCI spec options
an image config implies.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycontainerd import errdefs
from pycontainerd.images import Descriptor
from pycontainerd.oci import spec as oci

__all__ = [
    "DEFAULT_SNAPSHOTTER",
    "DEFAULT_UNIX_ENV",
    "LABEL_DEFAULT_SNAPSHOTTER",
    "LABEL_GC_SNAPSHOT_PREFIX",
    "LABEL_STOP_SIGNAL",
    "LABEL_UNCOMPRESSED",
    "Account",
    "Layer",
    "gc_snapshot_label",
    "pair_layers",
    "parse_group",
    "parse_passwd",
    "resolve_user",
    "unpack_key",
    "with_image_config",
]

#: The snapshotter used when none is named (containerd's default on Linux).
DEFAULT_SNAPSHOTTER = "overlayfs"
#: Namespace label naming the namespace's default snapshotter.
LABEL_DEFAULT_SNAPSHOTTER = "containerd.io/defaults/snapshotter"
#: Content label a compressed layer gets once its uncompressed digest is verified.
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
#: Prefix of the config blob's label holding the top snapshot of an unpack,
#: so garbage collection keeps the snapshots as long as the image.
LABEL_GC_SNAPSHOT_PREFIX = "containerd.io/gc.ref.snapshot."
#: Container label ctr sets to the image's stop signal.
LABEL_STOP_SIGNAL = "io.containerd.image.config.stop-signal"
#: The environment a process gets when the image config names none.
DEFAULT_UNIX_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer: the blob as stored (often compressed) and its diff ID."""

    blob: Descriptor
    diff_id: str


def pair_layers(layers: Sequence[Descriptor], diff_ids: Sequence[str]) -> list[Layer]:
    """Zip a manifest's layers with its config's diff IDs.

    They must match one to one: a config with a different count describes
    another image, and applying it would commit snapshots under wrong names.
    """
    if len(layers) != len(diff_ids):
        raise errdefs.FailedPrecondition(
            f"mismatched image rootfs and manifest layers: "
            f"{len(diff_ids)} diff ids, {len(layers)} layers"
        )
    return [Layer(blob, diff_id) for blob, diff_id in zip(layers, diff_ids, strict=True)]


def unpack_key(chain_id: str) -> str:
    """A fresh key for the active snapshot a layer is applied into.

    containerd's form, ``extract-<nanoseconds>-<random> <chain id>``, so two
    clients unpacking the same layer at once never collide on a key, and a
    leftover snapshot says which layer it was for.
    """
    unique = base64.urlsafe_b64encode(os.urandom(3)).decode()
    return f"extract-{time.time_ns() % 1_000_000_000}-{unique} {chain_id}"


def gc_snapshot_label(snapshotter: str) -> str:
    """The config label that keeps ``snapshotter``'s unpacked snapshots alive."""
    return LABEL_GC_SNAPSHOT_PREFIX + snapshotter


def _replace_or_append_env(defaults: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """``defaults`` with each ``KEY=value`` of ``overrides`` replacing or adding."""
    result = list(defaults)
    for item in overrides:
        key = item.split("=", 1)[0]
        result = [e for e in result if e.split("=", 1)[0] != key]
        result.append(item)
    return result


@dataclass(frozen=True, slots=True)
class Account:
    """One line of an image's /etc/passwd (name, uid, gid) or /etc/group
    (name, gid, members)."""

    name: str
    id: int
    gid: int = 0
    members: tuple[str, ...] = ()


def parse_passwd(text: str) -> list[Account]:
    """``name:x:uid:gid:...`` lines; malformed ones are skipped, as runc's parser does."""
    users = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            users.append(Account(parts[0], int(parts[2]), int(parts[3])))
        except ValueError:
            continue
    return users


def parse_group(text: str) -> list[Account]:
    """``name:x:gid:member,member`` lines."""
    groups = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 3 or line.startswith("#"):
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = tuple(m for m in (parts[3].split(",") if len(parts) > 3 else []) if m)
        groups.append(Account(parts[0], gid, gid, members))
    return groups


def _int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def resolve_user(user: str, passwd: str | None, group: str | None) -> dict[str, Any]:
    """The spec's ``process.user`` for an image's ``User`` ("" for root), as
    containerd 1.6.20 resolves it: names through the image's /etc/passwd and
    /etc/group (None when the file is absent), supplementary groups from the
    groups listing the user, and the primary group always among them."""
    users = parse_passwd(passwd) if passwd is not None else []
    groups = parse_group(group) if group is not None else []
    uid, gid = 0, 0
    name = "root"
    if user:
        parts = user.split(":")
        if len(parts) > 2:
            raise errdefs.InvalidArgument(f"invalid USER value {user}")
        uid_s = parts[0]
        number = _int(uid_s)
        if number is not None:
            uid = number
            found = next((u for u in users if u.id == uid), None)
            gid = found.gid if found else 0
        else:
            found = next((u for u in users if u.name == uid_s), None)
            if found is None:
                raise errdefs.NotFound(f"no users found for {uid_s!r} in the image's /etc/passwd")
            uid, gid = found.id, found.gid
        if len(parts) == 2:
            number = _int(parts[1])
            if number is not None:
                gid = number
            else:
                grp = next((g for g in groups if g.name == parts[1]), None)
                if grp is None:
                    raise errdefs.NotFound(
                        f"no groups found for {parts[1]!r} in the image's /etc/group"
                    )
                gid = grp.id
        by_uid = next((u for u in users if u.id == uid), None)
        name = by_uid.name if by_uid else ""
    extra = [g.id for g in groups if name and g.name != name and name in g.members]
    if gid not in extra:
        extra.insert(0, gid)
    return {"uid": uid, "gid": gid, "additionalGids": extra}


def with_image_config(
    config: Mapping[str, Any],
    args: Sequence[str] = (),
    *,
    passwd: str | None = None,
    group: str | None = None,
) -> oci.SpecOpt:
    """Run what the image config says: entrypoint + cmd (or ``args``), env, cwd, user.

    ``config`` is the decoded image config JSON (its ``config`` object holds
    ``Entrypoint``, ``Cmd``, ``Env``, ``WorkingDir``, ``User``), as
    containerd's ``oci.WithImageConfigArgs`` reads it.  Env entries already
    in the spec win over the image's.  ``passwd`` and ``group`` are the
    image's /etc/passwd and /etc/group (None when absent), which name the
    user and its supplementary groups.
    """
    run = config.get("config") or {}
    entrypoint = list(run.get("Entrypoint") or [])
    cmd = list(args) if args else list(run.get("Cmd") or [])
    image_env = list(run.get("Env") or []) or list(DEFAULT_UNIX_ENV)
    cwd = run.get("WorkingDir") or "/"
    user = resolve_user(run.get("User") or "", passwd, group)

    def opt(spec: oci.Spec) -> None:
        process = spec.setdefault("process", {})
        env = _replace_or_append_env(image_env, process.get("env") or [])
        oci.with_env(env)(spec)
        oci.with_process_args(*entrypoint, *cmd)(spec)
        oci.with_process_cwd(cwd)(spec)
        process = spec["process"]
        process["user"] = {**process.get("user", {}), **user}

    return opt
