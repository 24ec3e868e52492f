"""Running the real CLI in a subprocess, as a user would, and altering what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def occystrap(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("OCCYSTRAP_USERNAME", None) if "OCCYSTRAP_USERNAME" not in (env or {}) else None
    return subprocess.run(
        [sys.executable, "-m", "occystrap", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = occystrap(*args, env=env)
    assert proc.returncode == 0, f"occystrap {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A failing run: non-zero exit, one error line, no traceback."""
    proc = occystrap(*args, env=env)
    assert proc.returncode != 0, f"expected failure, got success:\n{proc.stderr}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("occystrap: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_line(output: str | subprocess.CompletedProcess[str]) -> str:
    """The one `occystrap: error:` line of a run's stderr (or of the stderr text given)."""
    stderr = output if isinstance(output, str) else output.stderr
    [line] = [l for l in stderr.splitlines() if l.startswith("occystrap: error:")]
    return line


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def settled(read: Callable[[], int], quiet: float = 0.3, limit: float = 5.0) -> int:
    """The registry writes its access log after answering: wait until a count stops moving."""
    import time

    deadline = time.monotonic() + limit
    value = read()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        again = read()
        if again == value:
            return value
        value = again
    return value


def read_lock(path: Path) -> dict[str, dict[str, dict[str, str]]]:
    """A lock file's images (format version 2: {"version": 2, "images": {...}})."""
    import json

    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and list(doc) == ["version", "images"], doc
    images: dict[str, dict[str, dict[str, str]]] = doc["images"]
    return images


def flip_byte(path: Path, at: int, mask: int = 0xFF) -> None:
    """Alter one byte of a file in place: same size, other content."""
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ mask]))
