"""Media types of image content: OCI and Docker schema 2.

The media type of a descriptor says how to read the blob: an index lists
manifests, a manifest names a config and layers, a layer is a (possibly
compressed) tar.  containerd treats the Docker and OCI spellings alike;
so do the predicates here.  Encrypted layers (``+encrypted``) count as
layers of their base type.
"""

from __future__ import annotations

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE",
    "OCI_LAYER_NONDISTRIBUTABLE_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "is_config",
    "is_index",
    "is_layer",
    "is_manifest",
    "is_non_distributable",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = OCI_LAYER_NONDISTRIBUTABLE + "+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = OCI_LAYER_NONDISTRIBUTABLE + "+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
DOCKER_LAYER_ZSTD = DOCKER_LAYER + ".zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# containerd's own checkpoint types are layers and configs too.
_CONTAINERD_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"
_LAYER_PREFIXES = (
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
    "application/vnd.containerd.container.rw.",
    "application/vnd.containerd.container.criu.checkpoint.",
)


def _base(mt: str) -> str:
    """``mt`` without an ``+encrypted`` suffix."""
    return mt.removesuffix("+encrypted")


def is_index(mt: str) -> bool:
    return mt in (OCI_INDEX, DOCKER_MANIFEST_LIST)


def is_manifest(mt: str) -> bool:
    return mt in (OCI_MANIFEST, DOCKER_MANIFEST)


def is_config(mt: str) -> bool:
    return mt in (OCI_CONFIG, DOCKER_CONFIG, _CONTAINERD_CHECKPOINT_CONFIG)


def is_layer(mt: str) -> bool:
    return _base(mt).startswith(_LAYER_PREFIXES)


def is_non_distributable(mt: str) -> bool:
    """Layers registries must not redistribute (foreign Windows base layers)."""
    base = _base(mt)
    return base == DOCKER_FOREIGN_LAYER or base.startswith(OCI_LAYER_NONDISTRIBUTABLE)
