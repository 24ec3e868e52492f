"""occystrap: fetch container images from Docker/OCI registries, fast."""

__version__ = "0.1.0"
