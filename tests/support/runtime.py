"""runc as a judge of runtime bundles (`config.json` + `rootfs/`), and umoci to make reference ones.

A bundle occystrap generates should run like the one `umoci unpack` makes from the same image:
same args, env, cwd and user, same files. `run_bundle` runs either with runc, as root, with a
private state directory (never /run/runc, which other runs on the machine may use), and always
deletes the container afterwards, even when the run fails or times out.

    bundle = make_reference_bundle(oci_dir, "latest", tmp / "ref")
    code, out, err = run_bundle(bundle, "ref-1")
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.validators import run_tool

RUN_TIMEOUT = 120.0


class RuncError(RuntimeError):
    pass


def _runc() -> str:
    path = shutil.which("runc")
    if path is None:
        raise RuncError("runc is not installed (apt-get install runc)")
    return path


def make_reference_bundle(oci_dir: Path, ref: str, bundle: Path) -> Path:
    """`umoci unpack --image OCI_DIR:REF BUNDLE`; returns BUNDLE (config.json, rootfs/, umoci's mtree).

    As root umoci keeps real owners and resolves the image's User through its own /etc/passwd.
    """
    run_tool(["umoci", "unpack", "--image", f"{oci_dir}:{ref}", str(bundle)])
    return bundle


def detach_terminal(bundle: Path) -> None:
    """Set process.terminal to false: with it true runc wants a console socket, which a test
    that only captures stdout does not have (umoci writes true)."""
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("process", {}).get("terminal"):
        config["process"]["terminal"] = False
        config_path.write_text(json.dumps(config, indent=2))


def run_bundle(
    bundle: Path, container_id: str | None = None, timeout: float = RUN_TIMEOUT, detach_tty: bool = True
) -> tuple[int, str, str]:
    """`runc run -b BUNDLE ID`: (exit code, stdout, stderr); `runc delete -f ID` always follows.

    `detach_tty` first rewrites process.terminal to false in config.json (see detach_terminal);
    pass False to judge a generated config.json exactly as written.
    """
    runc = _runc()
    if detach_tty:
        detach_terminal(bundle)
    cid = container_id or f"occy-{secrets.token_hex(4)}"
    # Private state dir: short (runc keeps a socket there) and not shared with anyone.
    state = tempfile.mkdtemp(prefix="occy-runc-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    try:
        proc = subprocess.run(
            [runc, "--root", state, "run", "--bundle", str(bundle), cid],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env=env,
        )
        return proc.returncode, proc.stdout, proc.stderr
    finally:
        subprocess.run(
            [runc, "--root", state, "delete", "--force", cid], capture_output=True, check=False, timeout=60
        )
        shutil.rmtree(state, ignore_errors=True)


__all__ = ["RuncError", "detach_terminal", "make_reference_bundle", "run_bundle"]
