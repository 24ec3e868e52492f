"""Unpacking layers safely, and flattening them into an image's final filesystem.

Paths are matched by components, never by string prefix: `.wh.de` removes `de`,
not `de_CH`, and an opaque `usr/lib` leaves `usr/lib64` alone. Nothing is ever
written through a symlink, so a hostile layer cannot reach outside the root.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from occystrap.errors import UnsafeArchiveError
from occystrap.tarstream import members, open_tar

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
AUFS_META = ".wh..wh."
COPY_CHUNK = 1024 * 1024


def clean_name(name: str) -> str:
    """A member name as a root-relative path, or UnsafeArchiveError."""
    if name.startswith("/"):
        raise UnsafeArchiveError(f"absolute path in layer: {name!r}")
    if "\0" in name:
        raise UnsafeArchiveError(f"NUL byte in member name {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"'..' in layer member name: {name!r}")
    return "/".join(parts)


def link_escapes(name: str, target: str) -> bool:
    """Whether a relative symlink at `name` pointing at `target` climbs above the root.

    Absolute targets are relative to the image's own root, so they stay inside.
    """
    if target.startswith("/"):
        return False
    depth = len(PurePosixPath(name).parent.parts)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


@dataclass
class ExpandStats:
    files: int = 0
    shadowed_files: int = 0
    shadowed_bytes: int = 0
    skipped_devices: int = 0


@dataclass
class TreeWriter:
    """Applies tar members to a directory.

    With keep_whiteouts the layer is unpacked as it is (whiteout files visible);
    without, whiteouts and opaque markers act on what lower layers wrote.
    """

    root: Path
    keep_whiteouts: bool
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    warn: Callable[[str], None] = lambda message: None
    stats: ExpandStats = field(default_factory=ExpandStats)
    _added: set[str] = field(default_factory=set)
    # Directories above what this layer added, kept up to date so whiteouts test them in O(1).
    _added_above: set[str] = field(default_factory=set)
    _dirs: dict[str, tarfile.TarInfo] = field(default_factory=dict)

    def begin_layer(self) -> None:
        self._added = set()
        self._added_above = set()

    def _mark_added(self, rel: str) -> None:
        self._added.add(rel)
        self._added_above.update(_ancestors(rel))

    # -- paths --------------------------------------------------------------

    def _host_path(self, rel: str, create: bool = True) -> Path | None:
        """The on-disk path for `rel`, refusing to go through any symlink on the way.

        Missing parents are created, or None is returned when `create` is false.
        """
        current = self.root
        parts = rel.split("/") if rel else []
        for part in parts[:-1]:
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchiveError(f"layer writes {rel!r} through the symlink {part!r}")
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                # A file where a directory must now be: the later layer wins.
                self._remove(current)
                os.mkdir(current, 0o755)
        return current / parts[-1] if parts else current

    def _remove(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            for sub, _dirs, files in os.walk(path):
                for name in files:
                    self._count_shadowed(Path(sub) / name)
            _make_writable_tree(path)
            shutil.rmtree(path)
            self._forget_dirs(path.relative_to(self.root).as_posix())
        else:
            self._count_shadowed(path)
            path.unlink()

    def _forget_dirs(self, rel: str) -> None:
        """A removed directory's metadata must not land, at finish(), on whatever replaces it."""
        prefix = rel + "/"
        for key in [k for k in self._dirs if k == rel or k.startswith(prefix)]:
            del self._dirs[key]

    def _count_shadowed(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            self.stats.shadowed_files += 1
            self.stats.shadowed_bytes += st.st_size

    # -- whiteouts ----------------------------------------------------------

    def _whiteout(self, rel: str) -> None:
        parent, _, name = rel.rpartition("/")
        if name == OPAQUE:
            self._opaque(parent)
            return
        victim = name[len(WHITEOUT) :]
        target = clean_name(f"{parent}/{victim}" if parent and victim else victim)
        # ".wh." and ".wh.." name nothing: they must never take their own directory (or the root) along.
        path = self._host_path(target, create=False) if target and victim != "." else None
        if path is None:
            return
        if target in self._added or target in self._added_above:
            # This layer put `target`, or something under it, ahead of the whiteout in tar order.
            # A whiteout hides only what lower layers hold, so only their part of it goes.
            if _is_real_dir(path):
                self._opaque(target)
            return
        self._remove(path)

    def _opaque(self, rel_dir: str) -> None:
        probe = self._host_path(rel_dir + "/x", create=False) if rel_dir else self.root / "x"
        base = probe.parent if probe is not None else None
        if base is None or not base.is_dir() or base.is_symlink():
            return
        prefix = f"{rel_dir}/" if rel_dir else ""

        def prune(directory: Path, rel_prefix: str) -> None:
            for entry in os.scandir(directory):
                rel = rel_prefix + entry.name
                if rel in self._added or rel in self._added_above:
                    if entry.is_dir(follow_symlinks=False):
                        prune(Path(entry.path), rel + "/")
                    continue
                self._remove(Path(entry.path))

        prune(base, prefix)

    # -- members ------------------------------------------------------------

    def apply(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        rel = clean_name(member.name)
        if not rel:
            if member.isdir():
                self._dirs[""] = member
            return
        name = rel.rpartition("/")[2]
        if not self.keep_whiteouts and name.startswith(WHITEOUT):
            # `.wh..wh.*` other than the opaque marker are aufs bookkeeping (hard-link
            # pool, private dirs): Docker neither applies nor keeps them.
            if name.startswith(AUFS_META) and name != OPAQUE:
                return
            self._whiteout(rel)
            return
        path = self._host_path(rel)
        assert path is not None
        existing = _lstat(path)
        if member.isdir():
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                self._remove(path)
                existing = None
            if existing is None:
                os.mkdir(path, 0o700)
            self._dirs[rel] = member
            self._mark_added(rel)
            return
        if existing is not None:
            self._remove(path)
        self._mark_added(rel)
        if member.issym():
            if link_escapes(rel, member.linkname):
                raise UnsafeArchiveError(f"symlink {rel!r} points outside the root: {member.linkname!r}")
            os.symlink(member.linkname, path)
        elif member.islnk():
            target = self._host_path(clean_name(member.linkname), create=False)
            tst = _lstat(target) if target is not None else None
            if target is None or tst is None or stat.S_ISDIR(tst.st_mode):
                if self.keep_whiteouts and tst is None:
                    # Unpacked alone, a layer may link to a file that only a lower layer holds.
                    self.warn(f"{rel}: hardlink target {member.linkname!r} is in a lower layer; skipped")
                    return
                raise UnsafeArchiveError(
                    f"hardlink {rel!r} points at missing or unusable {member.linkname!r}"
                )
            os.link(target, path, follow_symlinks=False)
            return
        elif member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                if data is not None:
                    shutil.copyfileobj(data, out, COPY_CHUNK)
            self.stats.files += 1
        elif member.ischr() or member.isblk() or member.isfifo():
            if not self.as_root and not member.isfifo():
                if self.stats.skipped_devices == 0:
                    self.warn("not running as root: device nodes are skipped")
                self.stats.skipped_devices += 1
                return
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        else:
            return
        self._set_meta(path, member)

    def _set_meta(self, path: Path, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.lchown(path, member.uid, member.gid)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def finish(self) -> None:
        """Directory modes and times last, deepest first, so read-only dirs don't block writing."""
        for rel in sorted(self._dirs, key=lambda r: r.count("/") + (1 if r else 0), reverse=True):
            path = self.root / rel if rel else self.root
            if _lstat(path) is None or path.is_symlink():
                continue
            self._set_meta(path, self._dirs[rel])


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        # NotADirectoryError: a later member replaced a parent directory with a file.
        return None


def _is_real_dir(path: Path) -> bool:
    st = _lstat(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def _make_writable_tree(path: Path) -> None:
    """rmtree fails inside read-only directories; open them up first."""
    for sub, dirs, _files in os.walk(path):
        for d in dirs:
            p = Path(sub) / d
            if not p.is_symlink():
                os.chmod(p, 0o700)
    os.chmod(path, 0o700)


def apply_layer(stream: IO[bytes], writers: list[TreeWriter]) -> None:
    """Read one plain layer tar to its end, applying every member to each writer."""
    for w in writers:
        w.begin_layer()
    with open_tar(stream) as tf:
        for member in members(tf):
            if member.isreg():
                # Each writer needs the bytes: spool once if several writers share the member.
                if len(writers) == 1:
                    writers[0].apply(member, tf.extractfile(member))
                    continue
                first = writers[0]
                first.apply(member, tf.extractfile(member))
                source = first.root / clean_name(member.name)
                for w in writers[1:]:
                    with open(source, "rb") as fh:
                        w.apply(member, fh)
            else:
                for w in writers:
                    w.apply(member, None)
        # Drain any trailing padding so the stream's digest check sees every byte.
        while stream.read(COPY_CHUNK):
            pass
