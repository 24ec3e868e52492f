"""A private Docker daemon (Debian's docker.io 20.10) as an independent judge of what occystrap writes.

`docker load` and `docker pull` are what users actually run on our tarballs and registries, so
the tests ask the real daemon. Everything it owns lives under one private directory: its own
socket, exec-root (its own containerd), data-root and config, so it neither sees nor disturbs any
other daemon on the machine. Storage is vfs (no overlay inside this sandbox): every layer is a
full copy, so keep test images small; vfs also fails on a later layer that replaces a non-empty
directory by a file, so keep that shape out of docker tests.

    with DockerDaemon() as docker:
        names = docker.load(tar)           # ["127.0.0.1:5000/team/app:v1"]
        docker.inspect(names[0])["Id"]     # the config digest
        docker.run(names[0], "cat /etc/motd")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.validators import mounts_under, run_tool

# Debian's client matches the 20.10 daemon; a newer one (/usr/local/bin/docker here) also
# works, but its output formats drift between versions and our parsing would drift with them.
DEBIAN_CLIENT = Path("/usr/bin/docker")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# A unix socket path must fit sun_path (108 bytes); containerd's socket sits four levels below
# the exec-root, and pytest's tmp paths are long, so the run-time state goes to a short dir.
_SUN_PATH_MAX = 107
_PROXY_VARS = {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}


class DockerError(RuntimeError):
    pass


def docker_client() -> str | None:
    if DEBIAN_CLIENT.exists():
        return str(DEBIAN_CLIENT)
    return shutil.which("docker")


class DockerDaemon:
    """dockerd with private state; `data_root` defaults to inside the short run-time dir."""

    def __init__(self, data_root: Path | None = None, start_timeout: float = START_TIMEOUT) -> None:
        dockerd = shutil.which("dockerd")
        client = docker_client()
        if dockerd is None or client is None:
            raise DockerError("dockerd / docker are not installed (apt-get install docker.io)")
        self.dockerd, self.client = dockerd, client
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="occy-dk-", dir="/tmp"))
        self.data_root = data_root or self.dir / "root"
        self.exec_root = self.dir / "exec"
        self.socket = self.dir / "sock"
        self.pidfile = self.dir / "pid"
        self.log_path = self.dir / "dockerd.log"
        self.config_dir = self.dir / "client"  # DOCKER_CONFIG: never the host's credentials
        self.process: subprocess.Popen[bytes] | None = None
        containerd_sock = self.exec_root / "containerd" / "containerd.sock.ttrpc"
        if len(str(containerd_sock)) > _SUN_PATH_MAX:
            raise DockerError(f"{containerd_sock} is too long for a unix socket")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.config_dir)}

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> DockerDaemon:
        for d in (self.data_root, self.exec_root, self.config_dir):
            d.mkdir(parents=True, exist_ok=True)
        # An empty daemon.json, so a host /etc/docker/daemon.json (mirrors, proxies) can't apply.
        daemon_json = self.dir / "daemon.json"
        daemon_json.write_text("{}\n")
        (self.config_dir / "config.json").write_text("{}\n")
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
        args = [
            self.dockerd,
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver=vfs",
            f"--config-file={daemon_json}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DockerError(f"dockerd exited with {self.process.returncode}:\n{self.log()}")
            probe = self("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise DockerError(f"dockerd did not answer within {self.start_timeout}s:\n{self.log()}")

    def log(self, tail: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM and wait (dockerd then stops its containerd); SIGKILL both if it hangs."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                # A killed dockerd leaves its supervised containerd running.
                self._kill_pidfile(self.exec_root / "containerd" / "containerd.pid")
        # Leftover shm and netns mounts of containers would make the rmtree fail with EBUSY.
        for point in mounts_under(self.dir, self.data_root):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _kill_pidfile(path: Path) -> None:
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the client ------------------------------------------------------------

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS...` against this daemon; raises AssertionError with stderr on failure."""
        return run_tool([self.client, *args], env=self.env, check=check, timeout=timeout)

    def load(self, tar: Path) -> list[str]:
        """`docker load -i TAR`; the loaded names (`name:tag`), or `sha256:…` IDs for untagged images."""
        out = self("load", "-i", str(tar)).stdout
        loaded = re.findall(r"^Loaded image(?: ID)?: (\S+)\s*$", out, re.MULTILINE)
        if not loaded:
            raise AssertionError(f"docker load reported no images:\n{out}")
        return loaded

    def pull(self, ref: str) -> str:
        """`docker pull REF`; the manifest digest docker reports (`sha256:…`)."""
        out = self("pull", ref).stdout
        m = re.search(r"^Digest: (sha256:[0-9a-f]{64})$", out, re.MULTILINE)
        if m is None:
            raise AssertionError(f"docker pull printed no digest:\n{out}")
        return m.group(1)

    def run(self, image: str, *cmd: str, options: tuple[str, ...] = ()) -> str:
        """`docker run --rm --network none [OPTIONS] IMAGE CMD...`; its stdout."""
        return self("run", "--rm", "--network", "none", *options, image, *cmd).stdout

    def inspect(self, image: str) -> dict[str, Any]:
        """`docker image inspect`: Id (config digest), RepoTags, RepoDigests, RootFS.Layers, Config…"""
        docs: list[dict[str, Any]] = json.loads(self("image", "inspect", image).stdout)
        return docs[0]

    def images(self) -> list[dict[str, Any]]:
        """One dict per image: Repository, Tag, ID (full), Digest, …"""
        out = self("images", "--no-trunc", "--digests", "--format", "{{json .}}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def rmi(self, *images: str) -> None:
        """Remove images (a session-wide daemon is shared: tests clean up what they load)."""
        if images:
            self("rmi", "--force", *images)


__all__ = ["DockerDaemon", "DockerError", "docker_client"]
