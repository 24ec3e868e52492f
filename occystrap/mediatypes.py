"""Media types, and what each kind of manifest and blob is for. No I/O, no parsing."""

from __future__ import annotations

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, "application/json")
IMAGE_CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

# A layer's compression is decided by its first bytes: some registries mislabel layers.
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Manifests, indexes and configs are held in memory: anything bigger is hostile or broken.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def compression_of(media_type: str) -> str:
    """'gzip', 'zstd' or 'none' as the media type says; magic bytes get the last word."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return "none"


def is_layer(media_type: str) -> bool:
    """A filesystem layer (a tar, maybe compressed). An empty type is an old client's layer."""
    return not media_type or ".tar" in media_type or "rootfs.diff" in media_type


def is_image_config(media_type: str) -> bool:
    return not media_type or media_type in IMAGE_CONFIG_TYPES
