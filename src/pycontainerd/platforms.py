"""Platforms (``linux/amd64``, ``linux/arm/v7``): parsing, normalising, matching.

Images carry one manifest per platform; which one a host uses is decided
here, the way containerd's ``platforms`` package decides it, so that an
index resolves to the same manifest whichever daemon or client reads it.
Names are normalised first (``x86_64`` is ``amd64``, ``aarch64`` is
``arm64``, ``armhf`` is ``arm/v7``...), then compared field by field.
A :class:`Matcher` says whether a platform is acceptable and, among
acceptable ones, which is preferred (:meth:`Matcher.less`).
"""

from __future__ import annotations

import platform as _host
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pycontainerd import errdefs

__all__ = [
    "Matcher",
    "Platform",
    "any_platform",
    "default",
    "default_strict",
    "format",
    "normalize",
    "only",
    "only_strict",
    "ordered",
    "parse",
    "parse_all",
]

# One component of a specifier, as containerd accepts it.
_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")
_KNOWN_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCH = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
# Python's machine names for the host, mapped to the OCI architecture.
_HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform: what an image's manifest or config was built for."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The OCI JSON form (the ``platform`` object of a descriptor)."""
        out: dict[str, object] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, obj: object) -> Platform:
        """A platform from its OCI JSON object; InvalidArgument if it is not one."""
        if not isinstance(obj, dict):
            raise errdefs.InvalidArgument("platform must be a JSON object")
        fields = {k: obj.get(k, "") for k in ("os", "architecture", "variant", "os.version")}
        features = obj.get("os.features") or []
        if not all(isinstance(v, str) for v in fields.values()) or not (
            isinstance(features, list) and all(isinstance(f, str) for f in features)
        ):
            raise errdefs.InvalidArgument("platform fields must be strings")
        return cls(
            os=str(fields["os"]),
            architecture=str(fields["architecture"]),
            variant=str(fields["variant"]),
            os_version=str(fields["os.version"]),
            os_features=tuple(features),
        )


def _normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's architecture/variant aliases, lower-cased."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """``p`` with containerd's aliases resolved (as ``platforms.Normalize``)."""
    arch, variant = _normalize_arch(p.architecture, p.variant)
    return Platform(_normalize_os(p.os), arch, variant, p.os_version, p.os_features)


def default() -> Platform:
    """The platform of this host (``linux/amd64`` on a 64-bit PC)."""
    machine = _host.machine().lower()
    arch = _HOST_ARCH.get(machine)
    if arch is None:
        arch, variant = _normalize_arch(machine, "")
        return Platform("linux", arch, variant)
    return Platform("linux", arch)


def parse(spec: str) -> Platform:
    """Parse ``os[/arch[/variant]]`` (or a lone architecture) as containerd does.

    A lone known OS gets the host's architecture; a lone known architecture
    gets the host's OS.  Anything else is InvalidArgument.
    """
    if "*" in spec:
        raise errdefs.InvalidArgument(f"{spec!r}: wildcards not yet supported")
    parts = spec.split("/")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise errdefs.InvalidArgument(
                f"{part!r} is an invalid component of {spec!r}: platform specifier "
                f"component must match {_COMPONENT.pattern!r}"
            )
    host = default()
    if len(parts) == 1:
        os_name = _normalize_os(parts[0])
        if os_name in _KNOWN_OS:
            return Platform(os_name, host.architecture, host.variant)
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform(host.os, arch, variant)
        raise errdefs.InvalidArgument(f"{spec!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(_normalize_os(parts[0]), arch, variant)
    if len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and not variant:
            variant = "v8"
        return Platform(_normalize_os(parts[0]), arch, variant)
    raise errdefs.InvalidArgument(f"{spec!r}: cannot parse platform specifier")


def parse_all(specs: Sequence[str]) -> list[Platform]:
    return [parse(s) for s in specs]


def format(p: Platform) -> str:
    """``os/arch[/variant]``; an empty OS shows as ``unknown``."""
    parts = [p.os or "unknown", p.architecture, p.variant]
    return "/".join(x for x in parts if x)


class Matcher(Protocol):
    """Which platforms are acceptable, and which of two is preferred."""

    def match(self, p: Platform) -> bool: ...

    def less(self, a: Platform, b: Platform) -> bool: ...


def _same(want: Platform, p: Platform) -> bool:
    got = normalize(p)
    return (
        want.os == got.os and want.architecture == got.architecture and want.variant == got.variant
    )


@dataclass(frozen=True, slots=True)
class _Ordered:
    """Accepts any of ``platforms``; an earlier one is preferred."""

    platforms: tuple[Platform, ...]

    def _rank(self, p: Platform) -> int:
        for i, want in enumerate(self.platforms):
            if _same(want, p):
                return i
        return len(self.platforms)

    def match(self, p: Platform) -> bool:
        return self._rank(p) < len(self.platforms)

    def less(self, a: Platform, b: Platform) -> bool:
        return self._rank(a) < self._rank(b)


@dataclass(frozen=True, slots=True)
class _Any:
    def match(self, p: Platform) -> bool:
        return True

    def less(self, a: Platform, b: Platform) -> bool:
        return False


def ordered(*platforms: Platform) -> Matcher:
    """Accept exactly these platforms, preferring them in the order given."""
    return _Ordered(tuple(normalize(p) for p in platforms))


def only_strict(p: Platform) -> Matcher:
    """Accept ``p`` alone, without the older ARM variants :func:`only` allows."""
    return ordered(p)


# An ARM CPU runs the code of older variants; containerd's only() accepts them.
_ARM_FALLBACK = {"v8": ("v7", "v6", "v5"), "v7": ("v6", "v5"), "v6": ("v5",)}


def only(p: Platform) -> Matcher:
    """Accept ``p`` (normalised), and for ARM the variants its CPU also runs."""
    p = normalize(p)
    fallbacks: list[Platform] = []
    if p.architecture == "arm":
        fallbacks = [
            Platform(p.os, "arm", v, p.os_version) for v in _ARM_FALLBACK.get(p.variant, ())
        ]
    elif p.architecture == "arm64" and p.variant in ("", "v8"):
        # 64-bit ARM can run 32-bit ARM images when the CPU allows; containerd
        # accepts them as lower-ranked fallbacks.
        fallbacks = [Platform(p.os, "arm", v, p.os_version) for v in ("v8", "v7", "v6", "v5")]
    return _Ordered((p, *fallbacks))


def any_platform() -> Matcher:
    """Accept every platform, preferring none (``--all-platforms``)."""
    return _Any()


def default_strict() -> Matcher:
    """Only this host's platform, nothing it merely can run."""
    return only_strict(default())
