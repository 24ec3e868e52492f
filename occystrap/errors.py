"""The library's typed errors. Only the CLI turns them into exit codes."""

from __future__ import annotations


class OccystrapError(Exception):
    """Root of every error the library raises on purpose."""

    exit_code = 1


class BadReferenceError(OccystrapError):
    """An image name, tag or digest that cannot be parsed."""

    exit_code = 2


class UsageError(OccystrapError):
    """Options that contradict each other or name missing files."""

    exit_code = 2


class NotFoundError(OccystrapError):
    """The registry, repository, tag or blob does not exist."""

    exit_code = 3


class AuthError(OccystrapError):
    """Credentials were refused or are needed."""

    exit_code = 4


class RateLimitedError(OccystrapError):
    """The registry kept answering 429."""

    exit_code = 5


class TransferError(OccystrapError):
    """The network failed and retries did not help."""

    exit_code = 5


class QuotaError(OccystrapError):
    """A destination refused content for its size or storage quota."""

    exit_code = 5


class IntegrityError(OccystrapError):
    """Content does not match its digest, size or diff_id."""

    exit_code = 6


class UnsafeArchiveError(OccystrapError):
    """A tar member would escape its root or is otherwise hostile."""

    exit_code = 6


class ManifestError(OccystrapError):
    """A manifest, index or config that is malformed or unusable."""

    exit_code = 7


class UnsupportedMediaTypeError(ManifestError):
    """A media type we do not handle (Docker schema1, foreign artifacts)."""


class PlatformNotFoundError(OccystrapError):
    """No manifest in an index matches the requested platform."""

    exit_code = 8

    def __init__(self, wanted: str, available: list[str]) -> None:
        self.wanted = wanted
        self.available = available
        listing = ", ".join(available) if available else "none"
        super().__init__(f"no image for platform {wanted}; available: {listing}")
