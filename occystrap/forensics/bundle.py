"""An OCI runtime bundle (`DEST/rootfs/` + `DEST/config.json`) that `runc run -b DEST` starts.

The root filesystem is flattened by expand.py's `TreeWriter` (the `--expand` rules, hostile
layers refused the same way) into a staging directory inside DEST, renamed to `rootfs` once
every layer has been applied and verified; config.json is written last, as the commit point,
so a DEST holding config.json holds a complete bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from occystrap.errors import ManifestError, UsageError
from occystrap.expand import TreeWriter, apply_layer
from occystrap.forensics.imageconfig import ImageConfig
from occystrap.forensics.layers import LayerRef, OpenLayer
from occystrap.forensics.runtime import runtime_config
from occystrap.forensics.users import read_in_root, resolve_user


def write_bundle(
    image_config: bytes,
    layers: Sequence[LayerRef],
    open_layer: OpenLayer,
    dest: Path,
    *,
    readonly: bool = False,
    hostname: str | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Path:
    """Write the bundle for the image whose config bytes and layers (bottom first) are given.
    DEST may exist but must not hold a bundle yet. The hostname defaults to the short image
    ID (the config digest), as Docker names containers. Returns DEST/config.json."""
    config = ImageConfig.parse(image_config)
    if config.os != "linux":
        raise ManifestError(f"a {config.os} image cannot run as an OCI runtime bundle here")
    dest.mkdir(parents=True, exist_ok=True)
    rootfs, config_path = dest / "rootfs", dest / "config.json"
    if os.path.lexists(rootfs) or os.path.lexists(config_path):
        raise UsageError(f"{dest} already holds a bundle")
    staging = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=dest))
    try:
        os.chmod(staging, 0o755)  # the image's own "./" entry, if any, sets it at finish()
        writer = TreeWriter(staging, keep_whiteouts=False, warn=warn)
        for ref in layers:
            with open_layer(ref) as stream:
                apply_layer(stream, [writer])
        writer.finish()
        user = resolve_user(
            config.user, read_in_root(staging, "/etc/passwd"), read_in_root(staging, "/etc/group")
        )
        spec = runtime_config(
            config,
            user,
            hostname=hostname or hashlib.sha256(image_config).hexdigest()[:12],
            readonly=readonly,
        )
        os.rename(staging, rootfs)
    except BaseException:
        _remove_tree(staging)
        raise
    partial = config_path.with_name(".config.json.partial")
    partial.write_text(json.dumps(spec, indent="\t") + "\n")
    os.replace(partial, config_path)
    return config_path


def _remove_tree(path: Path) -> None:
    """rmtree, after opening up the read-only directories a layer may have left (top-down, so
    each is listable before it is walked)."""
    if not path.exists():
        return
    os.chmod(path, stat.S_IRWXU)
    for sub, dirs, _files in os.walk(path):
        for name in dirs:
            if not os.path.islink(os.path.join(sub, name)):
                os.chmod(os.path.join(sub, name), stat.S_IRWXU)
    shutil.rmtree(path)
