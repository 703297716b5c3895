"""Serving the Bolt app: HTTP through a WSGI server, or Socket Mode; plus a health check."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from sqlalchemy import text

from bot.db import Database
from bot.settings import Settings
from bot.slack import shape
from bot.slack.app import build_app

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
# Slack's own replay window; Bolt applies the same one.
SIGNATURE_WINDOW_SECONDS = 300
# Unix seconds have 10 digits until 2286; anything much longer is not a timestamp.
MAX_TIMESTAMP_DIGITS = 12

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PareRequestHandler(SlackRequestHandler):
    """Bolt's WSGI adapter, plus a health check, 400 for malformed bodies and logged 401s."""

    def __init__(self, app: App, db: Database, signing_secret: str):
        super().__init__(app, path=EVENTS_PATH)
        self.db = db
        self.secret = signing_secret.encode("utf-8")

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        """Verify, parse, check and dispatch one request; never answer a bad body with 500."""
        # The raw bytes: the signature covers them, and Bolt's own reader fails on bad UTF-8.
        raw = _raw_body(request.environ)
        headers = request.get_headers()
        # Verified before Bolt sees the request, so that nothing (not even the error handler,
        # which answers where the body says) ever acts on an unsigned body.
        if not self._signed(raw, headers):
            return BoltResponse(status=401, body="invalid request")
        try:
            body = raw.decode("utf-8")
            bolt_request = BoltRequest(body=body, query=request.query_string, headers=headers)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            log.warning("malformed request refused: %s (%s bytes)", type(exc).__name__, len(raw))
            return BoltResponse(status=400, body="malformed request")
        refused = shape.refusal(bolt_request.body)
        return refused if refused is not None else self.app.dispatch(bolt_request)

    def _signed(self, raw: bytes, headers: dict[str, Any]) -> bool:
        """Check the signature; fail closed on anything unexpected; log refusals by reason."""
        try:
            return self._check_signature(raw, headers)
        except Exception as exc:  # noqa: BLE001 - a check that cannot finish must refuse
            log.warning("request refused: signature check failed (%s)", type(exc).__name__)
            return False

    def _check_signature(self, raw: bytes, headers: dict[str, Any]) -> bool:
        stamp = _first(headers, "x-slack-request-timestamp") or ""
        signature = _first(headers, "x-slack-signature") or ""
        # Slack sends whole seconds as ASCII digits; int() would also take " 1", "1_0" or other
        # scripts' digits, and the SDK's verifier crashes on the rest.
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS):
            log.warning("request refused: no valid timestamp")
            return False
        age = abs(time.time() - int(stamp))
        if age > SIGNATURE_WINDOW_SECONDS:
            log.warning("request refused: stale signature (%ss old)", int(age))
            return False
        base = b"v0:" + stamp.encode("ascii") + b":" + raw
        expected = "v0=" + hmac.new(self.secret, base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("latin-1")):
            log.warning("request refused: forged or wrong signature")
            return False
        return True

    def health(self) -> tuple[str, bytes]:
        """Return the status line and body of the health check (database reachable)."""
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            log.warning("health check failed: %s", type(exc).__name__)
            return "503 Service Unavailable", b'{"ok": false}'
        return "200 OK", json.dumps({"ok": True}).encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") == "GET":
            status, payload = self.health()
            start_response(status, [("Content-Type", "application/json")])
            return [payload]
        return super().__call__(environ, start_response)


def _raw_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return b""
    if stream is None or length <= 0:
        return b""
    return stream.read(length)


def _first(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def build_wsgi_app(
    settings: Settings, db: Database | None = None, app: App | None = None
) -> PareRequestHandler:
    """Build the WSGI application: POST /slack/events for Slack, GET /healthz for probes."""
    db = db or Database(settings.database_url)
    app = app or build_app(settings, db)
    _, secret = settings.require_slack()
    return PareRequestHandler(app, db, secret)


@dataclass
class RunningServer:
    """A WSGI server running in a background thread."""

    url: str
    stop: Callable[[], None]


def serve_in_thread(wsgi: WsgiApp, port: int = 0, threads: int = 8) -> RunningServer:
    """Serve a WSGI app with waitress on 127.0.0.1 in a thread (tests and the demo)."""
    from waitress import wasyncore
    from waitress.server import create_server

    sockets: dict[int, Any] = {}
    server = create_server(
        wsgi,
        map=sockets,
        host="127.0.0.1",
        port=port,
        threads=threads,
        max_request_body_size=MAX_BODY_BYTES,
    )
    stopping = threading.Event()

    def run() -> None:
        # Our own loop, so the sockets are closed by the thread that polls them.
        while not stopping.is_set():
            wasyncore.loop(timeout=0.05, map=sockets, count=1)
        server.close()
        server.task_dispatcher.shutdown()

    thread = threading.Thread(target=run, name="pare-web", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(timeout=5)

    return RunningServer(f"http://127.0.0.1:{server.effective_port}", stop)


@contextmanager
def _scheduler(settings: Settings, enabled: bool) -> Iterator[None]:
    """Run the scheduler beside the app, and release its lease when the app stops."""
    if not enabled:
        yield
        return
    from bot.scheduler import start_background

    handle = start_background(settings)
    try:
        yield
    finally:
        # Releasing the lease lets another replica lead at once instead of after it expires.
        handle.stop()


def serve(settings: Settings, port: int | None = None, with_scheduler: bool = True) -> None:
    """Run the app over HTTP with waitress (behind a load balancer), optionally the scheduler."""
    import waitress

    wsgi = build_wsgi_app(settings)
    port = port or settings.port
    with _scheduler(settings, with_scheduler):
        log.info("serving Slack requests on port %s at %s", port, EVENTS_PATH)
        # All interfaces: in production the load balancer reaches the process from outside.
        waitress.serve(
            wsgi,
            host="0.0.0.0",
            port=port,
            threads=16,
            ident="pare",
            # Slack's payloads are a few kilobytes; an unsigned flood is refused before it is
            # read into memory whole.
            max_request_body_size=MAX_BODY_BYTES,
        )


def serve_socket_mode(settings: Settings, with_scheduler: bool = True) -> None:
    """Run the app over Socket Mode (no public URL), optionally with the scheduler."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.errors import ConfigError

    if settings.slack_app_token is None:
        raise ConfigError("SLACK_APP_TOKEN is not set (Socket Mode needs an xapp- token)")
    db = Database(settings.database_url)
    app = build_app(settings, db)
    with _scheduler(settings, with_scheduler):
        log.info("connecting over Socket Mode")
        SocketModeHandler(app, settings.slack_app_token.get_secret_value()).start()
