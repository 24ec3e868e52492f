"""`export`: the flattened root filesystem as one tar stream (what `crane export` and
`docker export` give), for `tar -x`, `podman import` and `docker import`.

Layers are read once each, top first: a member is written the first time its path is seen,
unless a layer above hides it (`topdown.Shadows`), so whiteouts and opaque directories never
reach the output and memory holds path metadata only. Hardlinks stay hardlinks, and a link
always comes after the member holding its bytes (`hardlinks`): a link whose target lives in a
lower layer waits until the walk gets there. The one case a single pass cannot see coming is a
link to a file of its own layer that an upper layer overwrote or deleted: the link keeps the
old bytes, which were already streamed past. Such shadowed files are therefore copied to a
spool file on disk while their layer is read, and forgotten at its end, so the disk cost is
bounded by one layer's shadowed bytes and memory stays flat.

Owners, modes, mtimes and xattrs are kept; directories that no surviving layer declares get
mode 0755, root-owned, mtime 0. The root directory's own entry is not written. Hostile layers
fail with UnsafeArchiveError as `--expand` does; the output is then incomplete, so write it to
a temporary name and rename it once this returns.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from occystrap.errors import UnsafeArchiveError
from occystrap.forensics.hardlinks import Inode, PendingLinks, join
from occystrap.forensics.layers import LayerRef, OpenLayer
from occystrap.forensics.members import Member, ancestors, walk_layer
from occystrap.forensics.topdown import Shadows
from occystrap.tarstream import CHUNK

_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


@dataclass
class ExportStats:
    written: int = 0  # members in the output
    file_bytes: int = 0
    hardlinks: int = 0
    implicit_dirs: int = 0
    hidden: int = 0  # layer members that a layer above hides
    spooled_bytes: int = 0


def export_rootfs(
    layers: Sequence[LayerRef], open_layer: OpenLayer, out: BinaryIO, *, spool_dir: Path | None = None
) -> ExportStats:
    """Write the flattened filesystem of `layers` (bottom first) to `out` as a PAX tar stream.
    `out` is written sequentially and left open."""
    with (
        tempfile.TemporaryFile(dir=spool_dir) as spool,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tf,
    ):
        # Else tarfile copies member bytes 16 KiB at a time (typeshed lacks the attribute).
        tf.copybufsize = CHUNK  # type: ignore[attr-defined]
        flattener = _TopDown(tf, spool)
        for ref in reversed(layers):
            with open_layer(ref) as stream:
                flattener.layer(ref.index, stream)
        flattener.finish()
    return flattener.stats


class _TopDown:
    def __init__(self, tf: tarfile.TarFile, spool: IO[bytes]) -> None:
        self._tf = tf
        self._spool = spool
        self._shadows = Shadows()
        self._pending = PendingLinks()
        # The current layer's paths met so far: the inode of a non-directory, None for a
        # directory. Only links of the same layer may use them.
        self._local: dict[str, Inode | None] = {}
        self._maybe_symlinks: list[tuple[str, Inode]] = []  # this layer's links to lower layers
        self._dirs: set[str] = set()
        self._needed: set[str] = set()
        self.stats = ExportStats()

    def layer(self, index: int, stream: BinaryIO) -> None:
        self._shadows.begin(index)
        self._local, self._maybe_symlinks = {}, []
        # The spool only ever serves links of the layer being read: no inode from an earlier
        # layer can gain a name later, since links from above were all met before this layer.
        self._spool.seek(0)
        self._spool.truncate()
        for m, data in walk_layer(stream):
            visible = self._shadows.see(m)
            if m.is_marker:
                continue
            # Its parents exist from here on, declared or not, even if m itself goes later; a
            # later link of this layer to one of them would point at a directory.
            self._need_parents(m.path)
            self._local.update((a, None) for a in ancestors(m.path))
            if not visible:
                self.stats.hidden += 1
            if m.kind == "hardlink":
                self._link(m, index, visible)
            elif m.is_dir:
                self._pending.claim(m, index, self._shadows)  # refuses links waiting for it
                self._local[m.path] = None
                if visible:
                    self._write(m, m.path)
            else:
                self._node(m, data, index, visible)
        for path, inode in self._maybe_symlinks:
            if self._shadows.reached_through_in_layer(path):
                inode.find().reached_through.append(path)
        self._shadows.end()

    def finish(self) -> None:
        self._pending.check_done()
        for path in sorted(self._needed - self._dirs):
            self._write(Member(path=path, kind="dir", mode=0o755), path)
            self.stats.implicit_dirs += 1

    def _node(self, m: Member, data: IO[bytes] | None, index: int, visible: bool) -> None:
        inode = self._pending.claim(m, index, self._shadows) or Inode()
        inode.made_by(m)
        self._local[m.path] = inode
        if visible:
            self._write(m, m.path, data)
            inode.holder = m.path
        elif inode.waiting:
            name = inode.waiting.pop(0).path
            self._write(m, name, data)
            inode.holder = name
        elif m.kind == "file" and m.size and data is not None:
            offset = self._spool.seek(0, os.SEEK_END)
            shutil.copyfileobj(data, self._spool, CHUNK)
            inode.spooled = (offset, m.size)
            self.stats.spooled_bytes += m.size
        self._settle(inode)

    def _link(self, m: Member, index: int, visible: bool) -> None:
        if m.target in self._local:
            local = self._local[m.target]
            if local is None:
                raise UnsafeArchiveError(f"hardlink {m.path!r} points at the directory {m.target!r}")
            inode = local.find()
        elif any(isinstance(self._local.get(a), Inode) for a in ancestors(m.target)):
            # An earlier member of this layer put a non-directory above the target.
            raise UnsafeArchiveError(f"hardlink {m.path!r} points at missing {m.target!r}")
        else:
            inode = self._pending.wait(m.target, index)
        # A link to a symlink is a symlink: nothing may be written through it either.
        if inode.source is not None and inode.source.kind == "symlink":
            self._shadows.symlink_at(m.path)
        elif inode.source is None:
            if self._shadows.maybe_symlink_at(m.path):
                inode.reached_through.append(m.path)
            self._maybe_symlinks.append((m.path, inode))
        claimed = self._pending.claim(m, index, self._shadows)
        if claimed is not None:
            inode = join(inode, claimed)
        inode = inode.find()
        self._local[m.path] = inode
        if visible:
            inode.waiting.append(m)
        self._settle(inode)

    def _settle(self, inode: Inode) -> None:
        """Write the names waiting for `inode` once its bytes can go out first."""
        inode = inode.find()
        if not inode.waiting:
            return
        if inode.holder is None:
            source = inode.source
            if source is None:
                return  # its member is in a lower layer
            name = inode.waiting.pop(0).path
            data = None
            if inode.spooled is not None:
                self._spool.seek(inode.spooled[0])
                data = self._spool
            self._write(source, name, data)
            inode.holder = name
        for m in inode.waiting:
            self._write(m, m.path, link_to=inode.holder)
        inode.waiting = []

    def _write(self, m: Member, name: str, data: IO[bytes] | None = None, link_to: str | None = None) -> None:
        ti = tarfile.TarInfo(name)
        ti.mode, ti.uid, ti.gid, ti.mtime = m.mode, m.uid, m.gid, m.mtime
        ti.uname, ti.gname = m.uname, m.gname
        ti.pax_headers = dict(m.xattrs)
        if link_to is not None:
            ti.type, ti.linkname = tarfile.LNKTYPE, link_to
            self.stats.hardlinks += 1
        else:
            ti.type = _TAR_TYPES[m.kind]
            if m.kind == "file":
                ti.size = m.size
                self.stats.file_bytes += m.size
            elif m.kind == "symlink":
                ti.linkname = m.target
            elif m.kind in ("char", "block"):
                ti.devmajor, ti.devminor = m.devmajor, m.devminor
        self._tf.addfile(ti, data if ti.type == tarfile.REGTYPE else None)
        self.stats.written += 1
        if m.is_dir and link_to is None:
            self._dirs.add(name)
        self._need_parents(name)

    def _need_parents(self, path: str) -> None:
        for a in ancestors(path):
            if a in self._needed:
                break  # and so are its parents
            if self._shadows.keeps_dir(a):  # an opaque "a/b" removes "a/b/c", not "a/b"
                self._needed.add(a)
