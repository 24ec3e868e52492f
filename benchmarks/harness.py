"""The timing harness: one registry per invocation, commands run under `/usr/bin/time -v`, rounds
that alternate the tools being compared.

Every command runs under GNU time (peak RSS, CPU) and is timed with a monotonic clock; the tools of
one scenario alternate A B C D A B C D ... after one uncounted warm-up round, so drift on this shared
2-core machine hits all of them alike; outputs are deleted and `sync`ed between runs. The page cache
cannot be dropped, so the registry serves from memory: this measures the client, not the disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import GNU_TIME, KiB, MiB, gnu_time_stats, log
from benchmarks.images import ImageSpec, PushedImage, push_generated_image
from tests.support.registry import Registry, start_registry


@dataclass(frozen=True)
class Tool:
    """A command under test. `argv(image, rundir)` gives the command line and where its output goes.

    `verify(image, output)` (optional) checks the warm-up run's output and returns an error or None.
    `before()` and `after(m)` (optional) run untimed around every run: for output that is not a local
    path, e.g. a registry, which `before` wipes so every round does the same work and whose log
    `after` reads into `m.extra`.
    """

    name: str
    argv: Callable[[PushedImage, Path], tuple[list[str], Path]]
    verify: Callable[[PushedImage, Path], str | None] | None = None
    before: Callable[[], None] | None = None
    after: Callable[[Measurement], None] | None = None


@dataclass
class Measurement:
    """One run of one command (JSON detail of every report lists them all)."""

    tool: str
    image: str
    round: int  # 0 = warm-up
    rc: int
    wall_s: float
    max_rss_kib: int
    user_s: float
    sys_s: float
    served_bytes: int  # body bytes the registry sent during the run (from its access log)
    output_bytes: int
    error: str = ""
    served_blob_bytes: int = 0  # of which blob bodies (layers and configs): GET .../blobs/...
    extra: dict[str, float] = field(default_factory=dict)  # figures a Tool's `after` adds

    @property
    def counted(self) -> bool:
        return self.round > 0 and self.rc == 0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group this script started for one command (and only that)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def served_bytes(lines: Sequence[Any], path_part: str = "") -> int:
    return sum(r.bytes for r in lines if r.method == "GET" and r.status in (200, 206) and path_part in r.path)


@dataclass
class BenchContext:
    """What a scenario works with: the options, a scratch directory, the layer cache, the occystrap
    under test, and one registry on loopback for the whole invocation (images pushed once each)."""

    args: argparse.Namespace
    workdir: Path
    cache_dir: Path
    occystrap: str
    _registry: Registry | None = None
    _pushed: dict[ImageSpec, PushedImage] = field(default_factory=dict)
    _on_stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def registry(self) -> Registry:
        """One registry for the whole invocation, started on first use."""
        if self._registry is None:
            self._registry = start_registry(self.workdir / "registry")
            log(f"registry at {self._registry.host} (log: {self._registry.log_path})")
        return self._registry

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Run fn when the session ends (Ctrl-C and SIGTERM too): e.g. stop a second registry."""
        self._on_stop.append(fn)

    def stop(self) -> None:
        while self._on_stop:
            self._on_stop.pop()()
        if self._registry is not None:
            self._registry.stop()
            self._registry = None

    def push_image(self, spec: ImageSpec) -> PushedImage:
        if spec not in self._pushed:
            self._pushed[spec] = push_generated_image(self.registry, spec, self.cache_dir)
        return self._pushed[spec]

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
        }
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)  # skopeo's temporary files land in the scratch dir too
        return env

    def measure(self, tool: Tool, image: PushedImage, round_no: int) -> Measurement:
        """Run one command under /usr/bin/time -v, then delete its output."""
        rundir = self.workdir / "run" / tool.name
        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir(parents=True)
        if tool.before is not None:
            tool.before()
        argv, output = tool.argv(image, rundir)
        m = self.timed(tool.name, image.name, round_no, argv, rundir, output)
        if tool.after is not None:
            tool.after(m)
        if m.rc == 0 and round_no == 0 and tool.verify is not None and self.args.verify:
            problem = tool.verify(image, output)
            if problem:
                m.rc, m.error = -2, f"output check failed: {problem}"
        shutil.rmtree(rundir, ignore_errors=True)
        return m

    def timed(
        self, tool: str, image: str, round_no: int, argv: Sequence[str], cwd: Path, output: Path
    ) -> Measurement:
        """Run one command under /usr/bin/time -v; its output is left where it is."""
        time_file = self.workdir / "time.txt"
        time_file.unlink(missing_ok=True)
        log_before = len(self.registry.access_log())
        os.sync()  # the previous run's dirty pages are not this run's cost
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [GNU_TIME, "-v", "-o", str(time_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
            cwd=cwd,
            start_new_session=True,  # its own process group, so it can be killed on Ctrl-C
        )
        try:
            out, err = proc.communicate(timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = b"", f"timed out after {self.args.timeout}s".encode()
        except BaseException:
            _kill_group(proc)
            raise
        wall = time.perf_counter() - t0
        stats = gnu_time_stats(time_file.read_text(errors="replace")) if time_file.exists() else {}
        rc = proc.returncode if proc.returncode is not None else -1
        # The registry writes its access log line after the body: wait until the count settles.
        lines = self._settled_log()[log_before:]
        m = Measurement(
            tool=tool,
            image=image,
            round=round_no,
            rc=rc,
            wall_s=wall,
            max_rss_kib=int(stats.get("rss", 0)),
            user_s=stats.get("user", 0.0),
            sys_s=stats.get("sys", 0.0),
            served_bytes=served_bytes(lines),
            output_bytes=path_size(output) if output.exists() else 0,
            served_blob_bytes=served_bytes(lines, "/blobs/"),
        )
        if rc != 0:
            tail = (err or out).decode(errors="replace").strip().splitlines()[-15:]
            m.error = "\n".join(tail)
        return m

    def _settled_log(self, quiet: float = 0.05, limit: float = 2.0) -> list[Any]:
        lines = self.registry.access_log()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(quiet)
            again = self.registry.access_log()
            if len(again) == len(lines):
                return again
            lines = again
        return lines

    def run_alternating(self, image: PushedImage, tools: Sequence[Tool], runs: int) -> list[Measurement]:
        """One warm-up round (round 0, not counted), then `runs` rounds of A B C D ..."""
        results: list[Measurement] = []
        failed: set[str] = set()
        for round_no in range(runs + 1):
            for tool in tools:
                if tool.name in failed:
                    continue
                m = self.measure(tool, image, round_no)
                results.append(m)
                label = "warm-up" if round_no == 0 else f"run {round_no}/{runs}"
                log(
                    f"  [{image.name}] {label:>9} {tool.name:<26} {m.wall_s:7.2f}s  "
                    f"rss {m.max_rss_kib / KiB:7.1f} MiB  cpu {m.cpu_s:6.2f}s  "
                    f"served {m.served_bytes / MiB:7.1f} MiB  out {m.output_bytes / MiB:7.1f} MiB"
                    + ("" if m.rc == 0 else f"  FAILED (rc {m.rc})")
                )
                if m.rc != 0:
                    failed.add(tool.name)
                    log("    " + m.error.replace("\n", "\n    "))
        return results
