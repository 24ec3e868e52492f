"""Running the registry: listen, log each request, stop cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import abc, web, web_protocol
from aiohttp.http_exceptions import BadHttpMethod

from occystrap.errors import OccystrapError, UsageError
from occystrap.reference import split_host_port
from occystrap.serve.app import RegistryApp, error_response
from occystrap.serve.auth import Htpasswd
from occystrap.serve.index import Content
from occystrap.serve.names import RequestError
from occystrap.serve.send import SENT, Deadline

# In-flight pulls get this long to finish once a stop is asked for; then they are cut.
SHUTDOWN_GRACE = 5.0
_LOGGED_PATH = 300


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    timeout: float
    tls: ssl.SSLContext | None = None
    auth: Htpasswd | None = None
    access_log: bool = True
    verbose: bool = False


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (every interface)."""
    try:
        host, port = split_host_port(text)
    except ValueError:
        port = None
    if port is None or not 0 <= port <= 65535:
        raise UsageError(f"--listen wants HOST:PORT, not {text!r}")
    return host, port


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use {cert} and {key} for TLS: {exc}") from None
    return context


class AccessLog(abc.AbstractAccessLogger):
    """One line per request on stderr: client, method, path, status, body bytes, milliseconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sent = request.get(SENT)
        if sent is None:  # not streamed by us: an error, or aiohttp's answer to a malformed request
            body = getattr(response, "body", None)
            sent = len(body) if isinstance(body, bytes) and request.method != "HEAD" else 0
        path = quote(request.raw_path[:_LOGGED_PATH], safe="/:@?&=+,;%~-._[]!$'()*")
        method = quote(request.method[:32], safe="")
        line = f"{request.remote} {method} {path} {response.status} {sent} {time * 1000:.1f}ms\n"
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except OSError:  # stderr gone: serving matters more than logging
            pass


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, but a method its HTTP parser does not know (`BREW`) is
    answered as the registry answers any other method it does not serve: 405 UNSUPPORTED."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        if not isinstance(exc, BadHttpMethod) or str(exc.message).startswith("Received HTTPS"):
            return response
        refused = RequestError(405, "UNSUPPORTED", "unknown method: this registry is read-only")
        answer = error_response(refused)
        answer.headers["Allow"] = "GET, HEAD"
        answer.force_close()
        return answer


class _Server(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


async def serve(
    content: Content, options: Options, reload: Callable[[], Content], say: Callable[[str], None]
) -> str:
    """Serve until SIGINT or SIGTERM (the name of the one that stopped it is returned);
    SIGHUP re-reads PATH through `reload` and serves what it finds from then on."""
    registry = RegistryApp(content, Deadline(options.timeout), options.auth)
    _quiet_aiohttp(options.verbose)
    server = _Server(
        registry.handle,
        access_log_class=AccessLog,
        access_log=logging.getLogger("occystrap.serve.access") if options.access_log else None,
        # Also the deadline for a request's headers: the timer starts when the connection
        # does, so a client trickling a request line is dropped like an idle one.
        keepalive_timeout=options.timeout,
    )
    runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host or None, options.port, ssl_context=options.tls)
        try:
            await site.start()
        except OSError as exc:
            where = f"{options.host}:{options.port}"
            raise UsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        say(f"serving {describe(content)} at {_url(runner.addresses[0], options.tls is not None)}")
        return await _until_signal(_Reloader(registry, reload, say))
    finally:
        await runner.cleanup()
        registry.close()


def describe(content: Content) -> str:
    tags = sum(len(r.tags) for r in content.repositories.values())
    held = f"{len(content.repositories)} repositories, {tags} tags, {len(content.blobs)} blobs"
    return f"{content.source} ({held})"


class _Reloader:
    """SIGHUP: index PATH again in a thread (requests go on meanwhile), then swap. A failed
    re-read keeps the content being served, so a half-written mirror never takes it down."""

    def __init__(
        self, registry: RegistryApp, load: Callable[[], Content], say: Callable[[str], None]
    ) -> None:
        self.registry = registry
        self.load = load
        self.say = say
        self.task: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        try:
            content = await asyncio.to_thread(self.load)
        except OccystrapError as exc:
            self.say(f"warning: re-reading failed, still serving what was read before: {exc}")
            return
        for problem in content.problems:
            self.say(f"warning: not served: {problem}")
        self.registry.replace(content)
        self.say(f"reloaded: serving {describe(content)}")


async def _until_signal(reload: Callable[[], None]) -> str:
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()

    def stop(sig: signal.Signals) -> None:
        if not stopped.done():
            stopped.set_result(sig.name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        return await stopped
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _url(address: tuple[str, int] | tuple[str, int, int, int], tls: bool) -> str:
    host, port = address[0], address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def _quiet_aiohttp(verbose: bool) -> None:
    """aiohttp logs a traceback for every malformed request; the access log already has a
    line for it (a 400), so the traceback is only wanted when debugging."""
    logger = logging.getLogger("aiohttp.server")
    logger.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("occystrap: %(message)s"))
    logger.addHandler(handler if verbose else logging.NullHandler())
    logger.setLevel(logging.DEBUG if verbose else logging.CRITICAL)
