"""serve: a read-only registry over a directory or tarball, for pulls by any client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from occystrap.commands.common import wrap_errors


@click.command("serve")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--listen",
    default="127.0.0.1:5000",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on; port 0 picks a free one (the URL is printed).",
)
@click.option(
    "--repository",
    metavar="NAME",
    help="Repository for images stored under a bare tag or no name (default: from PATH's name).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve HTTPS: certificate chain (PEM).",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS: private key (PEM)."
)
@click.option(
    "--htpasswd",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Require Basic auth against this file of bcrypt hashes (htpasswd -B).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds a client may sit idle, take over its request, or take to accept 4 MiB of a blob.",
)
@click.option("-q", "--quiet", is_flag=True, help="No access log.")
@click.option("-v", "--verbose", is_flag=True, help="Also log aiohttp's tracebacks for malformed requests.")
@wrap_errors
def serve_cmd(
    path: Path,
    listen: str,
    repository: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    htpasswd: Path | None,
    timeout: float,
    quiet: bool,
    verbose: bool,
) -> None:
    """Serve PATH as a read-only registry that docker, podman, skopeo and occystrap pull from.

    PATH is a merged directory (occystrap mirror DIR), an OCI layout directory, or
    a tarball: a mirror bundle, an OCI archive or a docker save. A tarball is read
    in place (it must be uncompressed). Repositories are named as stored:
    127.0.0.1:5000/team/app:v1 is served as team/app:v1 (and under its full name),
    docker.io/library/busybox as library/busybox and busybox. Tags without a
    repository (an OCI layout's bare `latest`) go under --repository. Every write
    is refused (405); one access log line per request goes to stderr. PATH is
    indexed at start; SIGHUP indexes it again (after a new mirror run); SIGINT
    or SIGTERM stop the server.

    \b
    Examples:
      occystrap mirror images.yaml mirror/
      occystrap serve mirror/ --listen 127.0.0.1:5000
      podman pull --tls-verify=false 127.0.0.1:5000/team/app:v1
      skopeo copy --all --src-tls-verify=false docker://127.0.0.1:5000/team/app:v1 oci:out:v1
      occystrap serve bundle.tar --tls-cert server.pem --tls-key server.key --htpasswd users.htpasswd
    """
    from occystrap.serve import index, names, server
    from occystrap.serve.auth import Htpasswd

    host, port = server.parse_listen(listen)
    tls = server.tls_context(tls_cert, tls_key)
    auth = Htpasswd.load(htpasswd) if htpasswd is not None else None
    if repository is not None and not names.is_name(repository):
        raise click.BadParameter(f"{repository!r} is not a repository name", param_hint="--repository")
    default = repository or names.derive_repository(path.resolve().name)

    def say(message: str) -> None:
        click.echo(f"occystrap: {message}", err=True)

    def load() -> index.Content:
        return index.load(path, default)

    content = load()
    for problem in content.problems:
        say(f"warning: not served: {problem}")
    options = server.Options(host, port, timeout, tls, auth, access_log=not quiet, verbose=verbose)
    try:
        stopped = asyncio.run(server.serve(content, options, load, say))
    except KeyboardInterrupt:  # a second Ctrl-C during the shutdown grace
        stopped = "SIGINT"
    say(f"stopped ({stopped})")
