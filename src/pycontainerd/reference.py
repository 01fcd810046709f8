"""Image references and Docker's normalisation of them.

The rules are those of ``github.com/distribution/reference``, which Docker
and containerd use, so a name means the same image here as there::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path
    domain     := host [ ":" port ]          host: a DNS name, an IPv4 or [IPv6] address
    path       := component [ "/" component ]*
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex          checked as go-digest checks it

:func:`parse` reads that grammar as it is.  :func:`parse_normalized_named`
reads the names people type (Docker's ``ParseNormalizedNamed``): the first
component is the domain only if it contains a ``.`` or a ``:``, is
``localhost``, or has an upper-case letter (paths never do); otherwise the
domain is ``docker.io``, where a one-component path is an official image
under ``library/``; ``index.docker.io`` is another name for ``docker.io``.
:func:`parse_docker_ref` is containerd's ``ParseDockerRef`` on top: a name
alone gets the tag ``latest``, and a digest wins over a tag.  The familiar
form (:attr:`Reference.familiar_string`) drops ``docker.io/`` and
``library/`` again, as ``docker images`` and ``docker save`` print names.

Errors are ``InvalidArgument`` with distribution's messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pycontainerd import digest as digests
from pycontainerd import errdefs

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "LEGACY_DEFAULT_DOMAIN",
    "MAX_PATH_LENGTH",
    "OFFICIAL_REPO_PREFIX",
    "Reference",
    "familiarize",
    "normalize_docker_ref",
    "parse",
    "parse_docker_ref",
    "parse_normalized_named",
]

#: Docker Hub's domain in a normalised name.
DEFAULT_DOMAIN = "docker.io"
#: Docker Hub's old name ("the Docker Index"), read as :data:`DEFAULT_DOMAIN`.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
#: Where Docker Hub keeps official images (``busybox`` is ``library/busybox``).
OFFICIAL_REPO_PREFIX = "library/"
#: The tag of a name given without a tag or a digest.
DEFAULT_TAG = "latest"
#: Longest path (the name without its domain), in characters.
MAX_PATH_LENGTH = 255

_LOCALHOST = "localhost"

# distribution's regexp.go, spelled for Python: ASCII only (Go's ``\w`` is
# ASCII; Python's is not), and matched with fullmatch (``$`` would accept a
# trailing newline).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_NAME_RE = re.compile(rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: ``domain/path:tag@digest`` (tag and digest may be empty)."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``me/app``, ``ghcr.io/o/app``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        official = self.path.removeprefix(OFFICIAL_REPO_PREFIX)
        # Only an official image's single component loses the prefix: a nested
        # path under library/ keeps it, as in distribution.
        return official if "/" not in official else self.path

    @property
    def familiar_string(self) -> str:
        """The whole reference as Docker shows it: ``busybox:latest``."""
        return self._with_object(self.familiar_name)

    def __str__(self) -> str:
        return self._with_object(self.name)

    def _with_object(self, name: str) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{name}{tag}{digest}"


def parse(s: str) -> Reference:
    """``s`` read by the grammar as it is (distribution's ``Parse``): nothing added."""
    m = _REFERENCE_RE.fullmatch(s)
    if m is None:
        if not s:
            raise errdefs.InvalidArgument("repository name must have at least one component")
        if _REFERENCE_RE.fullmatch(s.lower()) is not None:
            raise errdefs.InvalidArgument("repository name must be lowercase")
        raise errdefs.InvalidArgument("invalid reference format")
    name = _NAME_RE.fullmatch(m["name"])
    assert name is not None  # the reference pattern contains the name pattern
    domain, path = name["domain"] or "", name["path"]
    if len(path) > MAX_PATH_LENGTH:
        raise errdefs.InvalidArgument(
            f"repository name must not be more than {MAX_PATH_LENGTH} characters"
        )
    dgst = m["digest"] or ""
    if dgst:
        digests.validate(dgst)
    return Reference(domain, path, m["tag"] or "", dgst)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """The domain and the rest of a name as typed (distribution's ``splitDockerDomain``)."""
    first, sep, rest = name.partition("/")
    if not sep:
        # One component ("busybox", "busybox:1.36") is never a host:port.
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif first == _LOCALHOST or "." in first or ":" in first or first.lower() != first:
        # A host name, an address or a port; paths are never upper case.
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized_named(s: str) -> Reference:
    """A name as people type it, made whole (Docker's ``ParseNormalizedNamed``).

    ``busybox`` is ``docker.io/library/busybox``, ``me/app:v1`` is
    ``docker.io/me/app:v1``; no tag is added.
    """
    if _IDENTIFIER_RE.fullmatch(s):
        raise errdefs.InvalidArgument(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(s)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise errdefs.InvalidArgument(
            f"invalid reference format: repository name ({remote}) must be lowercase"
        )
    return parse(f"{domain}/{remainder}")


def parse_docker_ref(s: str) -> Reference:
    """:func:`parse_normalized_named`, then containerd's ``ParseDockerRef``:
    the tag ``latest`` when there is neither tag nor digest, and only the
    digest when there are both."""
    ref = parse_normalized_named(s)
    if ref.digest and ref.tag:
        return Reference(ref.domain, ref.path, "", ref.digest)
    if not ref.digest and not ref.tag:
        return Reference(ref.domain, ref.path, DEFAULT_TAG)
    return ref


def normalize_docker_ref(s: str) -> str:
    """The full form of a name: ``busybox`` is ``docker.io/library/busybox:latest``."""
    return str(parse_docker_ref(s))


def familiarize(s: str) -> str:
    """The short form Docker shows: ``docker.io/library/busybox`` is ``busybox:latest``."""
    return parse_docker_ref(s).familiar_string
