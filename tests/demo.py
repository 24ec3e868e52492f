"""`make demo`: the main job on a machine with no internet.

Starts a local registry on a free loopback port, pushes a generated sample image,
fetches it with occystrap's progress display, shows the result and how to load it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.support import images
from tests.support.registry import start_registry

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"


def _content(seed: int, mb: int) -> list[images.Entry]:
    """Some text, some incompressible bytes: roughly what real layers hold."""
    rng = random.Random(seed)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)
    ]
    entries: list[images.Entry] = [images.directory(f"opt/demo{seed}")]
    for i in range(mb):
        if i % 2:
            data = rng.randbytes(1024 * 1024)
        else:
            data = b" ".join(rng.choice(words) for _ in range(180_000))[: 1024 * 1024]
        entries.append(images.file(f"opt/demo{seed}/file{i:03d}.bin", data))
    return entries


def main() -> int:
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="occystrap-demo-"))
    print("== generating a 3-layer sample image (about 60 MB)", flush=True)
    built = images.build_image(
        [_content(1, 32), _content(2, 16), _content(3, 12)], fmt="oci", compression="gzip"
    )
    registry = start_registry(work)
    try:
        ref = f"{registry.host}/demo/app"
        print(f"== local registry on {registry.url}; pushing {ref}:v1", flush=True)
        registry.push_image("demo/app", "v1", built)
        out = OUT / "app.tar"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "occystrap", "fetch-to-tarfile", ref, "v1", str(out)]
        print("== $ occystrap fetch-to-tarfile", ref, "v1", out.relative_to(ROOT), flush=True)
        subprocess.run(cmd, check=True)
        print(f"\n== {out.relative_to(ROOT)} ({out.stat().st_size / 1e6:.1f} MB):", flush=True)
        with tarfile.open(out) as tf:
            for member in tf.getmembers():
                print(f"   {member.size:>10}  {member.name}")
            manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        print("   manifest.json RepoTags:", manifest[0]["RepoTags"])
        print("\n== load it with:  docker load -i demo-out/app.tar   or   podman load -i demo-out/app.tar")
        if shutil.which("skopeo"):
            info = subprocess.run(
                ["skopeo", "inspect", f"docker-archive:{out}"], capture_output=True, text=True, check=True
            )
            digest = json.loads(info.stdout)["Layers"]
            print(f"== skopeo reads it as a docker-archive with {len(digest)} layers")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
        print("== registry stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
