"""`occystrap serve` started as a user would (`python -m occystrap serve`), and raw HTTP to it.

Not tests: the helpers test_serve*.py share. The server picks its own port (`--listen
127.0.0.1:0`) and prints its URL, so there is no free-port race; its stderr (start-up
line, access log, errors) goes to a file the tests read.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import ROOT
from tests.support import images

START_LIMIT = 120.0  # generous: a first start compiles bytecode and indexes the layout


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        """The first error code of a distribution-spec error document."""
        return str(self.json()["errors"][0]["code"])


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """127.0.0.1:PORT, as an image reference's registry."""
        return self.url.split("://", 1)[1].rstrip("/")

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def ref(self, repo: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{reference}"

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def connection(self, timeout: float = 60) -> http.client.HTTPConnection:
        if self.ssl_context is not None:
            context = self.ssl_context
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
        """One request, the path sent exactly as given (no normalization, no quoting)."""
        conn = self.connection()
        try:
            conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Response:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start(path: Path, *args: str, log: Path, ssl_context: ssl.SSLContext | None = None) -> Served:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "occystrap", "serve", str(path), "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("occystrap: serving ") and " at " in line:
                return Served(proc, line.rsplit(" at ", 1)[1], log, ssl_context)
        if proc.poll() is not None:
            raise AssertionError(f"occystrap serve exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"occystrap serve did not start:\n{log.read_text()}")


@contextmanager
def serving(path: Path, *args: str, log: Path, ssl_context: ssl.SSLContext | None = None) -> Iterator[Served]:
    served = start(path, *args, log=log, ssl_context=ssl_context)
    try:
        yield served
    finally:
        served.stop()


def access_lines(served: Served, needle: str) -> list[str]:
    """Lines of the log containing `needle`: access log lines, or the server's own when the
    needle starts with `occystrap:`."""
    own = needle.startswith("occystrap:")
    return [line for line in served.lines() if needle in line and line.startswith("occystrap:") == own]


def wait_for_line(served: Served, needle: str, seen: int = 0, limit: float = 120.0) -> str:
    """The log line containing `needle` after the `seen` earlier ones, once written."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = access_lines(served, needle)
        if len(found) > seen:
            return found[seen]
        time.sleep(0.05)
    raise AssertionError(f"no log line with {needle!r}:\n" + "\n".join(served.lines()[-30:]))


def write_layout(dest: Path, refs: dict[str, images.BuiltImage]) -> Path:
    """An OCI layout whose index.json names each image under the given ref names."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifests = []
    for name, image in refs.items():
        for digest, data in {**image.blobs(), image.manifest_digest: image.manifest}.items():
            (blobs / digest[7:]).write_bytes(data)
        manifests.append(
            {
                "mediaType": image.manifest_media_type,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        )
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return dest
