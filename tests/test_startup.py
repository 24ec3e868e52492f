"""Start-up is part of every small run: each command imports only what it needs. These tests
fail when a heavy module sneaks into a command's path (measured costs: aiohttp ~100 ms with
its SSL contexts, rich ~40 ms, the engine and its decoders ~25 ms)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.support import images

# Run a command in process, then list what it imported (the console script's os._exit is skipped).
PROBE = """
import json, sys
from occystrap.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
sys.stdout.flush()
print("\\nMODULES" + json.dumps(sorted(sys.modules)))
"""

HEAVY_FOR_LOOKING = (
    "aiohttp",
    "rich",
    "occystrap.engine",
    "occystrap.pipeline",
    "occystrap.registry.transport",
    "occystrap.registry.auth",
    "occystrap.ui.progress",
    "occystrap.events",
    "zstandard",
    "isal",
    "yaml",
    "filelock",
)


def _loaded(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return set(json.loads(proc.stdout.rpartition("MODULES")[2]))


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = images.build_sample_image(fmt="oci", compression="gzip")
    return images.write_oci_layout(
        tmp_path_factory.mktemp("startup") / "layout", built, "127.0.0.1:5000/s/app:v1"
    )


def test_help_imports_only_the_commands_themselves() -> None:
    loaded = _loaded("--help")
    assert "occystrap.commands.fetch" in loaded  # every command's one-line help
    sneaked = {m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_FOR_LOOKING)}
    assert not sneaked, sneaked


def test_inspecting_a_local_image_imports_no_network_display_or_transfer_code(layout: Path) -> None:
    loaded = _loaded("inspect", f"oci:{layout}:127.0.0.1:5000/s/app:v1")
    assert "occystrap.layout.reader" in loaded  # it did run
    sneaked = {m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_FOR_LOOKING)}
    assert not sneaked, sneaked


def test_a_quiet_fetch_imports_no_display(layout: Path, tmp_path: Path) -> None:
    loaded = _loaded(
        "copy", "--progress", "none", f"oci:{layout}:127.0.0.1:5000/s/app:v1", str(tmp_path / "o.tar")
    )
    assert (tmp_path / "o.tar").is_file()
    assert "occystrap.engine" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"rich", "aiohttp", "yaml"}}
