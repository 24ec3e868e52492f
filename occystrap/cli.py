"""The command line's entry point: a click group whose commands load only when used.

Each command lives in occystrap/commands/; importing only the one that runs keeps
start-up short (`--help` imports them all, for their one-line help).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import NoReturn

import click

# name -> "module:function", in the order `--help` lists them.
COMMANDS = {
    "fetch-to-tarfile": "occystrap.commands.fetch:fetch_to_tarfile",
    "fetch-to-extracted": "occystrap.commands.fetch:fetch_to_extracted",
    "recreate-image": "occystrap.commands.local:recreate_image",
    "tarfile-to-extracted": "occystrap.commands.local:tarfile_to_extracted",
    "copy": "occystrap.commands.copy:copy_cmd",
    "push": "occystrap.commands.push:push_cmd",
    "mirror": "occystrap.commands.mirror:mirror_cmd",
    "merge": "occystrap.commands.merge:merge_cmd",
    "lock": "occystrap.commands.lock:lock_cmd",
    "import": "occystrap.commands.importing:import_cmd",
    "prune": "occystrap.commands.prune:prune_cmd",
    "list-tags": "occystrap.commands.look:list_tags",
    "inspect": "occystrap.commands.look:inspect",
    "ratelimit": "occystrap.commands.ratelimit:ratelimit_cmd",
    "verify": "occystrap.commands.verify:verify_cmd",
    "serve": "occystrap.commands.serve:serve_cmd",
    "files": "occystrap.commands.forensics:files_cmd",
    "search": "occystrap.commands.forensics:search_cmd",
    "diff": "occystrap.commands.forensics:diff_cmd",
    "export": "occystrap.commands.rootfs:export_cmd",
    "fetch-to-oci-bundle": "occystrap.commands.rootfs:fetch_to_oci_bundle",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="occystrap")
def main() -> None:
    """Move container images between Docker/OCI registries, tarballs and directories, fast.

    \b
    Examples:
      occystrap fetch-to-tarfile library/busybox latest busybox.tar
      docker load -i busybox.tar      # or: podman load -i busybox.tar
      occystrap fetch-to-tarfile 127.0.0.1:5000/team/app v1 app.tar
      occystrap mirror images.yaml mirror/
    """


def entry() -> NoReturn:
    """The console script: main(), then exit without the interpreter's teardown.

    By the time main() returns, every output is complete, closed and renamed, and the
    worker threads are idle; the teardown (freeing every module, joining idle threads)
    would only add tens of milliseconds to each run.
    """
    try:
        main()
        code: int = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (`occystrap list-tags ... | head`)
            code = code or 1
    os._exit(code)
