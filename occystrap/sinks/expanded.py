"""--expand: each stored layer unpacked into layers/<hex>/ (whiteouts visible), and the image's
final filesystem into rootfs/<manifest hex>/, each built under a temp name and renamed.

Built from the verified blobs on disk after the transfer: layers arrive in parallel and
out of order, while the final tree must be built in order.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from occystrap.decode import open_plain
from occystrap.expand import ExpandStats, TreeWriter, apply_layer
from occystrap.layout import writer
from occystrap.model import Image


def expand_image(root: Path, image: Image, note: Callable[[str], None]) -> str:
    """Expand image under root; returns the final tree's path relative to root."""
    warn_once: set[str] = set()

    def warn(message: str) -> None:
        if message not in warn_once:
            warn_once.add(message)
            note(message)

    final_rel = f"rootfs/{image.manifest.hex}"
    final = root / final_rel
    tmp_final = temp_dir(final)
    rootfs = TreeWriter(tmp_final, keep_whiteouts=False, warn=warn)
    try:
        for layer in image.layers:
            layer_dir = root / "layers" / layer.descriptor.hex
            writers = [rootfs]
            tmp_layer: Path | None = None
            if not layer_dir.exists():
                tmp_layer = temp_dir(layer_dir)
                writers.insert(0, TreeWriter(tmp_layer, keep_whiteouts=True, warn=warn))
            with open_plain(root / writer.blob_path(layer.descriptor.digest)) as stream:
                apply_layer(stream, writers)
            if tmp_layer is not None:
                writers[0].finish()
                replace_dir(tmp_layer, layer_dir)
        rootfs.finish()
    except BaseException:
        rmtree(tmp_final)
        raise
    replace_dir(tmp_final, final)
    note(summary(image, rootfs.stats))
    return final_rel


def summary(image: Image, stats: ExpandStats) -> str:
    return (
        f"{image.reference}: flattened {len(image.layers)} layers into {stats.files} files; "
        f"{stats.shadowed_files} files ({stats.shadowed_bytes / 1e6:.1f} MB) shadowed by later layers "
        "are not in the final tree"
    )


def temp_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(mode=0o755)
    return tmp


def rmtree(path: Path) -> None:
    if path.exists():
        for sub, dirs, _files in os.walk(path):
            for d in dirs:
                p = Path(sub) / d
                if not p.is_symlink():
                    os.chmod(p, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = temp_dir(final)
        old.rmdir()
        os.rename(final, old)
        os.rename(tmp, final)
        rmtree(old)
    else:
        os.rename(tmp, final)
