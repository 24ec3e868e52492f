"""What every command shares: options, the reporter, the run, and errors as one line.

The only place that turns errors into exit codes and messages. Heavy modules (aiohttp,
rich) are imported where used, so `--help` and local commands start without them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import click

from occystrap import reference
from occystrap.concurrency import Limits, first_error
from occystrap.errors import OccystrapError
from occystrap.platform import Platform
from occystrap.tuning import DEFAULT_PARALLEL

if TYPE_CHECKING:
    from occystrap.engine import Engine
    from occystrap.events import Event
    from occystrap.registry.client import RegistryClient
    from occystrap.registry.options import ClientOptions
    from occystrap.userconfig import Registries

F = TypeVar("F", bound=Callable[..., Any])


class CliReporter(Protocol):
    def emit(self, event: Event) -> None: ...
    def close(self, ok: bool = True, error: str | None = None) -> None: ...


def _option_list(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def progress_options(func: F) -> F:
    return _option_list(
        func,
        [
            click.option(
                "--progress",
                type=click.Choice(["auto", "rich", "plain", "json", "none"]),
                default="auto",
                show_default=True,
                help="How to show progress on stderr.",
            ),
            click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
            click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks."),
        ],
    )


def transfer_options(func: F) -> F:
    return _option_list(
        func,
        [
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
                help="Blobs moved at once.",
            ),
        ],
    )


def registry_options(func: F) -> F:
    func = _option_list(
        func,
        [
            click.option("--username", envvar="OCCYSTRAP_USERNAME", help="Registry user name."),
            click.option(
                "--password",
                envvar="OCCYSTRAP_PASSWORD",
                help="Registry password or token (prefer the env var).",
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
                "--proxy",
                metavar="URL",
                help="HTTP(S) proxy for every request (default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY).",
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
        ],
    )
    return transfer_options(progress_options(func))


def make_reporter(progress: str, quiet: bool) -> CliReporter:
    if quiet or progress == "none":
        return Silent()
    from occystrap.ui import progress as ui

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
    return ui.JsonReporter()


class Silent:
    """--quiet, --progress none, and the commands whose answer is stdout (inspect, list-tags):
    no display module imported at all."""

    def emit(self, event: Event) -> None:
        return None

    def close(self, ok: bool = True, error: str | None = None) -> None:
        return None


def parse_resolve(items: tuple[str, ...]) -> dict[str, str]:
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


def client_options(opts: dict[str, Any], registries: Registries | None = None) -> ClientOptions:
    """The registry client's options from the command line, the user's config file and a mirror
    spec's per-registry settings (the spec's win over the file's)."""
    from occystrap import userconfig
    from occystrap.registry.auth import Credentials
    from occystrap.registry.options import ClientOptions

    table = userconfig.merged(userconfig.load(), registries or {})
    return ClientOptions(
        username=opts.get("username"),
        password=opts.get("password"),
        insecure_registries=frozenset(opts.get("insecure") or ())
        | {h for h, s in table.items() if s.insecure},
        credentials={h: Credentials(s.username, s.password or "") for h, s in table.items() if s.username},
        ca_cert=opts.get("ca_cert"),
        retries=opts.get("retries", 5),
        resolve=parse_resolve(opts.get("resolve") or ()),
        read_timeout=opts.get("read_timeout", 60.0),
        connect_timeout=opts.get("connect_timeout", 30.0),
        proxy=opts.get("proxy"),
        mirrors={h: s.mirrors for h, s in table.items() if s.mirrors},
        rate_limit_reserve=opts.get("rate_limit_reserve"),
    )


@dataclass
class Context:
    """What a command's body works with: the reporter, the engine, the platform, registries."""

    reporter: CliReporter
    limits: Limits
    platform: Platform
    # Built on first use: the user's config file is read only by commands that talk to a
    # registry, so a broken one never stops a local command.
    make_options: Callable[[], ClientOptions]
    stack: AsyncExitStack
    _clients: dict[str, RegistryClient] = field(default_factory=dict)
    _engine: Engine | None = None
    _options: ClientOptions | None = None
    # --upload-chunk-size: PATCH chunks of at most this many bytes into a registry (None: one PUT).
    upload_chunk_size: int | None = None

    @property
    def options(self) -> ClientOptions:
        """Built on first use: a local command never imports the registry's credential code."""
        if self._options is None:
            self._options = self.make_options()
        return self._options

    @property
    def engine(self) -> Engine:
        """Built on first use: looking commands (inspect, list-tags) never pay for its imports."""
        if self._engine is None:
            from occystrap.engine import Engine

            retries = self._options.retries if self._options is not None else 5
            self._engine = Engine(self.reporter, self.limits, retries)
        return self._engine

    async def client(self, role: str = "source", options: ClientOptions | None = None) -> RegistryClient:
        """A registry client, opened on first use and closed when the command ends; the source
        and the destination each get their own (their credentials differ)."""
        from occystrap.registry.client import RegistryClient

        if role not in self._clients:
            client = RegistryClient(options or self.options, self.reporter)
            self._clients[role] = await self.stack.enter_async_context(client)
        return self._clients[role]


def run(
    opts: dict[str, Any],
    body: Callable[[Context], Awaitable[None]],
    options: ClientOptions | None = None,
) -> None:
    """Set up reporter, engine and (lazily) registry clients; run body; errors become one line."""
    try:
        platform = Platform.parse(opts.get("platform") or "linux/amd64")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--platform") from None
    reporter = make_reporter(opts.get("progress") or "auto", bool(opts.get("quiet")))
    if opts.get("verbose"):
        setup_logging(reporter)
    given = options
    parse_resolve(opts.get("resolve") or ())  # a usage error belongs to click, before the run

    def make_options() -> ClientOptions:
        return given or client_options(opts)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            limits = Limits(opts.get("parallel") or DEFAULT_PARALLEL)
            context = Context(reporter, limits, platform, make_options, stack)
            context.upload_chunk_size = opts.get("upload_chunk_size")
            await body(context)

    run_reported(opts, reporter, main)


def run_reported(opts: dict[str, Any], reporter: CliReporter, main: Callable[[], Awaitable[None]]) -> None:
    verbose = bool(opts.get("verbose"))

    from occystrap.heap import keep_freed_memory

    keep_freed_memory()
    try:
        anyio.run(main)
    except BaseException as raw:
        err = first_error(raw)
        if isinstance(err, (SystemExit, click.exceptions.Exit)):
            raise
        if isinstance(err, KeyboardInterrupt):
            code, message = 130, "interrupted"
        elif isinstance(err, OccystrapError):
            code, message = err.exit_code, str(err)
        else:
            code, message = 70, f"internal error: {type(err).__name__}: {err}"
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


def echo_bytes(data: bytes) -> None:
    """Exact bytes on stdout (a manifest, a config): no re-encoding, no added newline."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


_SIZE_UNITS = {"": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3}  # fmt: skip


def parse_size(text: str) -> int:
    """`64MiB`, `100MB`, `5000000`: a byte count."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", text.strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS or int(match.group(1)) * _SIZE_UNITS[unit] <= 0:
        raise click.BadParameter(f"expected a size such as 64MiB or 100MB, not {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def upload_option(func: F) -> F:
    return click.option(
        "--upload-chunk-size",
        metavar="SIZE",
        callback=lambda ctx, param, value: parse_size(value) if value else None,
        help="Upload blobs in PATCH chunks of at most SIZE (e.g. 64MiB) for registries or proxies that "
        "cap a request's body; default: one streamed PUT per blob.",
    )(func)
