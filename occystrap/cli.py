"""Command line. The only place that turns errors into exit codes and messages."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import anyio
import click

from occystrap import reference
from occystrap.errors import OccystrapError, UsageError
from occystrap.events import Event, Info, RunStarted
from occystrap.model import Platform
from occystrap.tuning import DEFAULT_PARALLEL

if TYPE_CHECKING:
    # Imported where used: aiohttp and friends cost start-up time that
    # `--help`, `verify` and the local commands never need.
    from occystrap.engine import Engine
    from occystrap.registry import RegistryClient

F = TypeVar("F", bound=Callable[..., Any])


class CliReporter(Protocol):
    def emit(self, event: Event) -> None: ...
    def close(self, ok: bool = True, error: str | None = None) -> None: ...


def _first_error(exc: BaseException) -> BaseException:
    """Task groups wrap failures; the user wants the one that mattered."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_first_error(e) for e in exc.exceptions]
        for leaf in leaves:
            if isinstance(leaf, OccystrapError):
                return leaf
        for leaf in leaves:
            if isinstance(leaf, KeyboardInterrupt):
                return leaf
        return leaves[0]
    return exc


def registry_options(func: F) -> F:
    options = [
        click.option("--username", envvar="OCCYSTRAP_USERNAME", help="Registry user name."),
        click.option(
            "--password", envvar="OCCYSTRAP_PASSWORD", help="Registry password or token (prefer the env var)."
        ),
        click.option(
            "--insecure-registry",
            "insecure",
            multiple=True,
            metavar="HOST",
            help="Allow plain HTTP / unverified TLS for HOST[:PORT] (repeatable).",
        ),
        click.option(
            "--resolve",
            multiple=True,
            metavar="HOST=ADDRESS",
            help="Connect to ADDRESS for HOST (repeatable), like curl --resolve; TLS still checks HOST.",
        ),
        click.option(
            "--ca-cert", type=click.Path(dir_okay=False, path_type=Path), help="Extra CA bundle (PEM)."
        ),
        click.option(
            "--platform",
            default="linux/amd64",
            show_default=True,
            help="os/arch[/variant] to pick from an index.",
        ),
        click.option(
            "-j",
            "--parallel",
            type=click.IntRange(1, 64),
            default=DEFAULT_PARALLEL,
            show_default=True,
            help="Blobs fetched at once.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 100),
            default=5,
            show_default=True,
            help="Retries per request.",
        ),
        click.option(
            "--read-timeout",
            type=click.FloatRange(0.1),
            default=60.0,
            show_default=True,
            help="Seconds without a byte before a request is retried (there is no total timeout).",
        ),
        click.option(
            "--connect-timeout",
            type=click.FloatRange(0.1),
            default=30.0,
            show_default=True,
            help="Seconds to connect.",
        ),
        click.option(
            "--progress",
            type=click.Choice(["auto", "rich", "plain", "json", "none"]),
            default="auto",
            show_default=True,
            help="How to show progress on stderr.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_reporter(progress: str, quiet: bool) -> CliReporter:
    from occystrap.ui import progress as ui

    if quiet:
        progress = "none"
    if progress == "auto":
        dumb = os.environ.get("TERM") == "dumb"
        progress = "rich" if sys.stderr.isatty() and not dumb else "plain"
    if progress == "rich":
        from occystrap.ui.live import RichReporter

        reporter = RichReporter()
        reporter.__enter__()
        return reporter
    if progress == "plain":
        return ui.PlainReporter()
    if progress == "json":
        return ui.JsonReporter()
    return ui.QuietReporter()


def _parse_resolve(items: tuple[str, ...]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for item in items:
        host, sep, address = item.partition("=")
        if not sep or not host or not address:
            raise click.BadParameter(f"expected HOST=ADDRESS, not {item!r}", param_hint="--resolve")
        pins[host] = address.strip("[]")
    return pins


def setup_logging(reporter: CliReporter) -> None:
    """Debug lines go above the live display on a terminal, as plain lines otherwise."""
    console = getattr(reporter, "console", None)
    handler: logging.Handler
    if console is not None and console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # aiohttp and asyncio internals drown the requests, statuses and retries that matter.
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def run(
    opts: dict[str, Any],
    body: Callable[[RegistryClient, Engine, Platform], Awaitable[None]],
    credentials: dict[str, tuple[str, str]] | None = None,
    insecure: frozenset[str] = frozenset(),
) -> None:
    """Set up client, engine and reporter; run body; map errors to one line and an exit code.

    credentials and insecure add per-registry settings (a mirror spec's) to the options'.
    """
    from occystrap.auth import Credentials
    from occystrap.engine import Engine
    from occystrap.registry import ClientOptions, RegistryClient

    try:
        platform = Platform.parse(opts["platform"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--platform") from None
    reporter = make_reporter(opts["progress"], opts["quiet"])
    if opts.get("verbose"):
        setup_logging(reporter)
    options = ClientOptions(
        username=opts.get("username"),
        password=opts.get("password"),
        insecure_registries=frozenset(opts.get("insecure") or ()) | insecure,
        credentials={host: Credentials(u, p) for host, (u, p) in (credentials or {}).items()},
        ca_cert=opts.get("ca_cert"),
        retries=opts["retries"],
        resolve=_parse_resolve(opts.get("resolve") or ()),
        read_timeout=opts["read_timeout"],
        connect_timeout=opts["connect_timeout"],
    )

    async def main() -> None:
        async with RegistryClient(options, reporter) as client:
            await body(client, Engine(client, reporter, opts["parallel"]), platform)

    run_reported(opts, reporter, main)


def run_reported(opts: dict[str, Any], reporter: CliReporter, main: Callable[[], Awaitable[None]]) -> None:
    verbose = bool(opts.get("verbose"))

    from occystrap.heap import keep_freed_memory

    keep_freed_memory()
    code = 0
    try:
        anyio.run(main)
    except BaseException as raw:
        err = _first_error(raw)
        if isinstance(err, (SystemExit, click.exceptions.Exit)):
            raise
        if isinstance(err, KeyboardInterrupt):
            code = 130
            message = "interrupted"
        elif isinstance(err, OccystrapError):
            code = err.exit_code
            message = str(err)
        else:
            code = 70
            message = f"internal error: {type(err).__name__}: {err}"
        if verbose:
            traceback.print_exception(raw)
        _close(reporter, ok=False, error=message)
        click.echo(f"occystrap: error: {message}", err=True)
        sys.exit(code)
    _close(reporter, ok=True)


def _close(reporter: CliReporter, ok: bool, error: str | None = None) -> None:
    exit_ = getattr(reporter, "__exit__", None)
    if exit_ is not None:
        exit_(None, None, None)
    reporter.close(ok=ok, error=error)


def parse_ref(image: str, tag: str | None) -> reference.Reference:
    return reference.parse(image, tag)


def wrap_errors(func: F) -> F:
    """Errors raised before the event loop starts (bad references) get the same treatment."""

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OccystrapError as exc:
            click.echo(f"occystrap: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return inner  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="occystrap")
def main() -> None:
    """Fetch container images from Docker/OCI registries, fast.

    \b
    Examples:
      occystrap fetch-to-tarfile library/busybox latest busybox.tar
      docker load -i busybox.tar      # or: podman load -i busybox.tar
      occystrap fetch-to-tarfile 127.0.0.1:5000/team/app v1 app.tar
      occystrap fetch-to-tarfile ghcr.io/org/app sha256:0123... app.tar
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


@main.command("fetch-to-tarfile")
@click.argument("image")
@click.argument("tag")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--uncompressed-layers",
    is_flag=True,
    help="Store plain tar layers (for old tooling) instead of as served.",
)
@registry_options
@wrap_errors
def fetch_to_tarfile(image: str, tag: str, output: Path, uncompressed_layers: bool, **opts: Any) -> None:
    """Fetch IMAGE:TAG into OUTPUT, a tarball `docker load` and `podman load` accept.

    TAG may be a digest (sha256:...). The tarball is Docker 25's `docker save`
    layout: an OCI image layout that is also docker-loadable. It appears only
    once complete and verified.

    \b
    Examples:
      occystrap fetch-to-tarfile library/busybox latest busybox.tar
      occystrap fetch-to-tarfile --platform linux/arm64 busybox latest busybox-arm64.tar
      occystrap fetch-to-tarfile --uncompressed-layers 127.0.0.1:5000/team/app v1 app.tar
    """
    ref = parse_ref(image, tag)
    if output.is_dir():
        raise UsageError(f"{output} is a directory")

    from occystrap.sinks.tarball import TarballSink

    async def body(client: RegistryClient, engine: Engine, platform: Platform) -> None:
        engine.reporter.emit(RunStarted((str(ref),), str(output)))
        images = await engine.resolve_all([ref], platform)
        sink = TarballSink(output, uncompressed_layers)
        await engine.fetch_images(images, sink)

    run(opts, body)


def expand_options(func: F) -> F:
    func = click.option(
        "--expand",
        is_flag=True,
        help="Also unpack each layer (whiteouts visible) into layers/<hex>/ and build the final "
        "filesystem, whiteouts applied, in rootfs/<manifest hex>/.",
    )(func)
    return click.option(
        "--use-unique-names",
        is_flag=True,
        help="Share DIR between many images: blobs stored once, a uniquely named manifest per image, "
        "catalog.json mapping image -> tag -> manifest.",
    )(func)


@main.command("fetch-to-extracted")
@click.argument("image")
@click.argument("tag")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@expand_options
@registry_options
@wrap_errors
def fetch_to_extracted(
    image: str, tag: str, directory: Path, use_unique_names: bool, expand: bool, **opts: Any
) -> None:
    """Fetch IMAGE:TAG into DIRECTORY as files: the tarball's layout, unpacked.

    `cd DIRECTORY; tar -cf ../x.tar *` gives a tarball docker/podman load.
    Blobs already in DIRECTORY (verified by digest) are not downloaded again.

    \b
    Examples:
      occystrap fetch-to-extracted busybox latest busybox.d
      occystrap fetch-to-extracted --use-unique-names busybox latest mirror/
      occystrap fetch-to-extracted --use-unique-names --expand 127.0.0.1:5000/team/app v1 mirror/
    """
    ref = parse_ref(image, tag)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")

    from occystrap.sinks.directory import DirectorySink

    async def body(client: RegistryClient, engine: Engine, platform: Platform) -> None:
        engine.reporter.emit(RunStarted((str(ref),), str(directory)))
        images = await engine.resolve_all([ref], platform)
        sink = DirectorySink(
            directory, use_unique_names, expand, note=lambda m: engine.reporter.emit(Info(m))
        )
        await engine.fetch_images(images, sink)

    run(opts, body)


def local_options(func: F) -> F:
    func = click.option("-v", "--verbose", is_flag=True, help="Tracebacks on errors.")(func)
    return click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(func)


def run_local(opts: dict[str, Any], work: Callable[[Callable[[str], None]], None]) -> None:
    """Commands that need no registry: same error handling, notes as plain lines."""

    def note(message: str) -> None:
        if not opts.get("quiet"):
            click.echo(message, err=True)

    async def main() -> None:
        await anyio.to_thread.run_sync(work, note)

    from occystrap.ui.progress import QuietReporter

    run_reported(opts, QuietReporter(), main)


@main.command("recreate-image")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("image")
@click.argument("tag")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@local_options
@wrap_errors
def recreate_image(directory: Path, image: str, tag: str, output: Path, **opts: Any) -> None:
    """Write one image from a merged DIRECTORY back out as a loadable tarball.

    \b
    Example:
      occystrap recreate-image mirror/ busybox latest busybox.tar
    """
    ref = parse_ref(image, tag)

    def work(note: Callable[[str], None]) -> None:
        from occystrap.layout import as_served, blob_path
        from occystrap.sinks.tarball import write_tarball
        from occystrap.sources import layoutdir

        img = layoutdir.load_image(directory, ref)
        layoutdir.verify_layers(directory, img)
        write_tarball(output, [as_served(img)], lambda layer: directory / blob_path(layer.descriptor.digest))
        note(f"wrote {ref} to {output}")

    run_local(opts, work)


@main.command("tarfile-to-extracted")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@expand_options
@local_options
@wrap_errors
def tarfile_to_extracted(
    tarball: Path, directory: Path, use_unique_names: bool, expand: bool, **opts: Any
) -> None:
    """Import a `docker save` tarball (classic or Docker 25 / OCI form) into DIRECTORY.

    \b
    Examples:
      occystrap tarfile-to-extracted busybox.tar busybox.d
      occystrap tarfile-to-extracted --use-unique-names --expand saved.tar mirror/
    """

    def work(note: Callable[[str], None]) -> None:
        from occystrap.sinks.directory import DirectorySink
        from occystrap.sources.tarball import TarballSource

        source = TarballSource(tarball)
        try:
            found = source.images()
            sink = DirectorySink(directory, use_unique_names, expand, note=note)
            source.copy_layers(found, sink, lambda digest, size: None)
            sink.commit([f.image for f in found])
        finally:
            source.close()
        for f in found:
            note(f"imported {f.image.reference}")

    run_local(opts, work)


from occystrap import cli_mirror  # noqa: E402,F401
