"""Who may change a merged directory's blobs: writers share it, prune has it alone.

A run that adds content (a mirror, an import, a fetch) writes blobs long before its
catalog names them; prune deletes every blob no catalog entry names. So writers hold a
shared lock for their whole run and prune an exclusive one. The lock is flock(2) on the
directory itself, so taking it creates no file: a refused import leaves DIR as it was.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from occystrap.errors import UsageError


def hold_shared(root: Path) -> int:
    """Block until no prune runs on root; the descriptor to give to release()."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold_exclusive(root: Path) -> int:
    """root to ourselves, or one clear error when another run is writing it (no waiting:
    a mirror can take hours, and prune is easy to run again)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"another occystrap run is writing {root}; prune it once that run ends") from None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops its flock


@contextmanager
def shared(root: Path) -> Iterator[None]:
    fd = hold_shared(root) if root.is_dir() else None
    try:
        yield
    finally:
        release(fd)


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    fd = hold_exclusive(root)
    try:
        yield
    finally:
        release(fd)
