"""A local Slack stand-in: the Web API methods Pare uses, served over HTTP on 127.0.0.1.

The demo posts to it and the tests use it as the fake Slack Web API. It keeps every call per
method and each channel's messages (thread replies and edits too), so it can print what each
channel shows. It binds to the loopback interface only and never forwards anything.

It also plays Slack's side of Socket Mode: apps.connections.open (app-level token only) hands
out a one-use ws:// URL to a WebSocket endpoint it serves itself, which says hello, sends the
envelopes a test pushes, records the acks and can ask the client to reconnect.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_TOKEN = "xoxb-fake-standin"
DEFAULT_APP_TOKEN = "xapp-1-A0PARE-standin-token"
# Slack answers apps.connections.open only for the app-level token, and refuses it elsewhere.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
LINK_PATH = "/link/"
# How long push() waits for a connection and wait_ack() for an ack: Slack itself expects acks
# within 3 seconds, and a slow test machine gets some slack.
ACK_WAIT_SECONDS = 5.0
BOT_USER = "UPAREBOT"
# Slack allows about one message per second per channel; the stand-in can enforce it.
CHANNEL_INTERVAL_SECONDS = 1.0


@dataclass
class Message:
    """A message as a channel shows it."""

    ts: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    edits: int = 0
    # Ephemeral messages are seen by one user only.
    visible_to: str | None = None
    replies: list[Message] = field(default_factory=list)


@dataclass
class _Fault:
    remaining: int
    status: int
    error: str
    retry_after: int | None = None
    # Do the work, then answer with the error: Slack posted but the answer was lost.
    after: bool = False


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    message_ts: str | None


@dataclass
class _Link:
    """One Socket Mode connection, as the Slack side holds it."""

    connection: Any  # websockets.sync.server.ServerConnection
    open: bool = True


class SlackStandIn:
    """A Slack Web API stand-in; start() serves it, url is its base for WebClient."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        per_channel_limit: bool = False,
        channel_interval: float = CHANNEL_INTERVAL_SECONDS,
        app_token: str = DEFAULT_APP_TOKEN,
    ):
        self.token = token
        self.app_token = app_token
        self.per_channel_limit = per_channel_limit
        self.channel_interval = channel_interval
        # Modals opened and App Home views published, in order.
        self.views: list[dict[str, Any]] = []
        self.homes: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.channels: dict[str, list[Message]] = {}
        self.channel_names: dict[str, str] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self._faults: dict[str, list[_Fault]] = defaultdict(list)
        self._responses: dict[str, _ResponseUrl] = {}
        self._last_post: dict[str, float] = {}
        self._clock = itertools.count(1)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Socket Mode: envelopes sent, acks received (by envelope id), tickets not yet used.
        self.envelopes: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self._tickets: set[str] = set()
        self._links: list[_Link] = []
        self._changed = threading.Condition(self._lock)
        self._ws_server: Any = None
        self._ws_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        """Serve on 127.0.0.1 at a free port, in a background thread."""
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-standin", daemon=True
        )
        self._thread.start()
        log.info("Slack stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, Socket Mode connections included."""
        if self._ws_server is not None:
            # Shutting the server down also closes its open connections (code 1001).
            self._ws_server.shutdown()
            if self._ws_thread is not None:
                self._ws_thread.join(timeout=5)
            self._ws_server = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the port it listens on."""
        assert self._server is not None, "start() the stand-in first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return the Web API base URL, for settings.slack_api_url."""
        return f"http://{LOOPBACK}:{self.port}/api/"

    # -- set-up for tests and the demo -------------------------------------------------------

    def add_user(self, user_id: str, name: str, deleted: bool = False) -> None:
        """Make users.info know a user."""
        self.users[user_id] = {"id": user_id, "name": name, "real_name": name, "deleted": deleted}

    def add_channel(self, channel_id: str, name: str) -> None:
        """Name a channel (any channel id is accepted even without this)."""
        self.channel_names[channel_id] = name

    def fail(
        self,
        method: str,
        times: int = 1,
        status: int = 200,
        error: str = "fatal_error",
        after: bool = False,
    ) -> None:
        """Answer the next `times` calls of method with an error (ok false, or an HTTP status).

        With after=True the call takes effect first, as when Slack posts and then fails.
        """
        self._faults[method].append(_Fault(times, status, error, after=after))

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next `times` calls of method with 429 and Retry-After."""
        self._faults[method].append(_Fault(times, 429, "ratelimited", retry_after))

    def response_url(self, channel: str, user: str, message_ts: str | None = None) -> str:
        """Return a fresh response_url bound to a channel, a user and optionally a message."""
        key = f"r{next(self._clock)}"
        self._responses[key] = _ResponseUrl(channel, user, message_ts)
        return f"http://{LOOPBACK}:{self.port}/response/{key}"

    # -- reading what happened ---------------------------------------------------------------

    def count(self, method: str) -> int:
        """Return how many calls of method were answered (faults included)."""
        return len(self.calls.get(method, []))

    def messages(self, channel: str) -> list[Message]:
        """Return a channel's top-level messages, oldest first."""
        return list(self.channels.get(channel, []))

    def find(self, channel: str, ts: str) -> Message | None:
        """Return the message (top-level or reply) with this ts."""
        for message in self.channels.get(channel, []):
            if message.ts == ts:
                return message
            for reply in message.replies:
                if reply.ts == ts:
                    return reply
        return None

    def transcript(self, channel: str | None = None) -> str:
        """Return what each channel (or one) shows, as readable text."""
        lines: list[str] = []
        names = {uid: user["name"] for uid, user in self.users.items()}
        names.setdefault(BOT_USER, "pare")
        for chan in sorted(self.channels) if channel is None else [channel]:
            name = self.channel_names.get(chan, chan)
            lines.append(f"=== #{name} ({chan}) ===")
            for message in self.channels.get(chan, []):
                lines.extend(_render(message, "", names))
                for reply in message.replies:
                    lines.extend(_render(reply, "    | ", names))
            lines.append("")
        return "\n".join(lines)

    # -- the API -----------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._clock)}.{next(self._clock):06d}"

    def handle_api(self, method: str, args: dict[str, Any], auth: str | None):
        """Answer one Web API call: (status, headers, body)."""
        with self._lock:
            self.calls[method].append(args)
            fault = self._take_fault(method)
            if fault is not None and not fault.after:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                return fault.status, headers, {"ok": False, "error": fault.error}
            refused = self._refuse_token(method, auth)
            if refused is not None:
                return 200, {}, {"ok": False, "error": refused}
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            if handler is None:
                return 200, {}, {"ok": False, "error": "unknown_method"}
            answer = handler(args)
            if fault is not None:
                return fault.status, {}, {"ok": False, "error": fault.error}
            return answer

    def _refuse_token(self, method: str, auth: str | None) -> str | None:
        app_only = method in APP_TOKEN_METHODS
        expected, other = (self.app_token, self.token) if app_only else (self.token, self.app_token)
        if auth == f"Bearer {expected}":
            return None
        return "not_allowed_token_type" if auth == f"Bearer {other}" else "invalid_auth"

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    def _api_apps_connections_open(self, args: dict[str, Any]):
        # Like Slack's, each URL admits one connection; a reconnect asks for a new one.
        ticket = secrets.token_urlsafe(16)
        self._tickets.add(ticket)
        port = self._serve_links()
        return 200, {}, {"ok": True, "url": f"ws://{LOOPBACK}:{port}{LINK_PATH}?ticket={ticket}"}

    def _api_auth_test(self, args: dict[str, Any]):
        body = {"url": "http://standin.invalid/", "team": "Stand-in", "user": "pare"}
        return 200, {}, {"ok": True, **body, "team_id": "T0STANDIN", "user_id": BOT_USER}

    def _api_chat_postMessage(self, args: dict[str, Any]):
        channel = str(args.get("channel") or "")
        if not channel:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        if self.per_channel_limit:
            now = time.monotonic()
            last = self._last_post.get(channel)
            if last is not None and now - last < self.channel_interval:
                return 429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}
            self._last_post[channel] = now
        message = Message(
            ts=self._next_ts(),
            user=BOT_USER,
            text=str(args.get("text") or ""),
            blocks=_as_list(args.get("blocks")),
            thread_ts=args.get("thread_ts"),
            metadata=_as_dict(args.get("metadata")),
        )
        messages = self.channels.setdefault(channel, [])
        parent = self.find(channel, message.thread_ts) if message.thread_ts else None
        if message.thread_ts and parent is None:
            return 200, {}, {"ok": False, "error": "thread_not_found"}
        (parent.replies if parent else messages).append(message)
        return (
            200,
            {},
            {"ok": True, "channel": channel, "ts": message.ts, "message": _wire(message)},
        )

    def _api_chat_update(self, args: dict[str, Any]):
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        message = self.find(channel, ts)
        if message is None:
            return 200, {}, {"ok": False, "error": "message_not_found"}
        message.text = str(args.get("text") or message.text)
        if "blocks" in args:
            message.blocks = _as_list(args.get("blocks"))
        message.edits += 1
        return 200, {}, {"ok": True, "channel": channel, "ts": ts, "text": message.text}

    def _api_chat_postEphemeral(self, args: dict[str, Any]):
        channel, user = str(args.get("channel") or ""), str(args.get("user") or "")
        if not channel or not user:
            return 200, {}, {"ok": False, "error": "user_not_in_channel"}
        self._add_ephemeral(channel, user, args)
        return 200, {}, {"ok": True, "message_ts": self._next_ts()}

    def _add_ephemeral(self, channel: str, user: str, args: dict[str, Any]) -> Message:
        message = Message(
            ts=self._next_ts(),
            user=BOT_USER,
            text=str(args.get("text") or ""),
            blocks=_as_list(args.get("blocks")),
            visible_to=user,
        )
        self.channels.setdefault(channel, []).append(message)
        return message

    def _api_views_open(self, args: dict[str, Any]):
        view = _as_dict(args.get("view")) or {}
        if not args.get("trigger_id"):
            return 200, {}, {"ok": False, "error": "invalid_trigger_id"}
        opened = {"id": f"V{next(self._clock)}", **view}
        self.views.append(opened)
        return 200, {}, {"ok": True, "view": opened}

    def _api_views_publish(self, args: dict[str, Any]):
        view = _as_dict(args.get("view")) or {}
        user = str(args.get("user_id") or "")
        if not user:
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        if len(view.get("blocks") or []) > 100:
            return 200, {}, {"ok": False, "error": "invalid_blocks"}
        self.homes[user] = view
        return 200, {}, {"ok": True, "view": {"id": f"V{next(self._clock)}", **view}}

    def _api_users_info(self, args: dict[str, Any]):
        user = self.users.get(str(args.get("user") or ""))
        if user is None:
            return 200, {}, {"ok": False, "error": "user_not_found"}
        return 200, {}, {"ok": True, "user": user}

    def _api_conversations_info(self, args: dict[str, Any]):
        channel = str(args.get("channel") or "")
        name = self.channel_names.get(channel, channel.lower())
        body = {"id": channel, "name": name, "is_member": True, "is_archived": False}
        return 200, {}, {"ok": True, "channel": body}

    def _api_conversations_history(self, args: dict[str, Any]):
        found = [_wire(m) for m in reversed(self.channels.get(str(args.get("channel")), []))]
        found = [m for m in found if "visible_to" not in m]
        return 200, {}, {"ok": True, "messages": found, "has_more": False}

    def _api_conversations_replies(self, args: dict[str, Any]):
        parent = self.find(str(args.get("channel") or ""), str(args.get("ts") or ""))
        if parent is None:
            return 200, {}, {"ok": False, "error": "thread_not_found"}
        found = [_wire(parent)] + [_wire(r) for r in parent.replies]
        return 200, {}, {"ok": True, "messages": found, "has_more": False}

    def handle_response_url(self, key: str, payload: dict[str, Any]):
        """Answer a POST to a response_url the way Slack's does."""
        with self._lock:
            self.calls["response_url"].append(payload)
            target = self._responses.get(key)
            if target is None:
                return 404, {}, {"ok": False, "error": "expired_url"}
            original = self.find(target.channel, target.message_ts) if target.message_ts else None
            if payload.get("delete_original") and original is not None:
                self.channels[target.channel].remove(original)
            elif payload.get("replace_original") and original is not None:
                original.text = str(payload.get("text") or original.text)
                original.blocks = _as_list(payload.get("blocks"))
                original.edits += 1
            elif payload.get("response_type") == "in_channel":
                self._api_chat_postMessage({**payload, "channel": target.channel})
            else:
                self._add_ephemeral(target.channel, target.user, payload)
            return 200, {}, {"ok": True}

    # -- Socket Mode: Slack's side of the WebSocket ------------------------------------------

    def _serve_links(self) -> int:
        """Serve the WebSocket endpoint (started on first use); return its port."""
        if self._ws_server is None:
            # Imported here: only Socket Mode needs the library, not the demo or HTTP tests.
            from websockets.sync.server import serve

            self._ws_server = serve(
                self._run_link,
                LOOPBACK,
                0,
                process_request=self._admit,
                # The SDK's client never asks for compression, so none is negotiated.
                compression=None,
            )
            self._ws_thread = threading.Thread(
                target=self._ws_server.serve_forever, name="slack-standin-ws", daemon=True
            )
            self._ws_thread.start()
        return int(self._ws_server.socket.getsockname()[1])

    def _admit(self, connection: Any, request: Any) -> Any:
        """Refuse the handshake unless the URL carries a ticket issued and not yet used."""
        parts = urlsplit(request.path)
        ticket = dict(parse_qsl(parts.query)).get("ticket", "")
        with self._lock:
            valid = parts.path == LINK_PATH and ticket in self._tickets
            self._tickets.discard(ticket)
        if valid:
            return None
        log.warning("Socket Mode handshake refused: unknown or used ticket")
        return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid ticket\n")

    def _run_link(self, connection: Any) -> None:
        """Say hello like Slack, then record every ack until the connection closes."""
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            link = _Link(connection)
            self._links.append(link)
            live = sum(1 for each in self._links if each.open)
            self._changed.notify_all()
        hello = {
            "type": "hello",
            "num_connections": live,
            "debug_info": {"host": "standin", "approximate_connection_time": 3600},
            "connection_info": {"app_id": "A0PARE"},
        }
        try:
            connection.send(json.dumps(hello))
            for raw in connection:
                self._record_ack(raw)
        except ConnectionClosed:
            pass  # the SDK's client drops the TCP connection without a closing handshake
        finally:
            with self._lock:
                link.open = False
                self._changed.notify_all()

    def _record_ack(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("Socket Mode: a message that is not JSON (%s bytes)", len(raw))
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not envelope_id:
            log.warning("Socket Mode: a message without an envelope_id")
            return
        with self._lock:
            self.acks[str(envelope_id)] = message
            self._changed.notify_all()

    @property
    def links_opened(self) -> int:
        """Return how many Socket Mode connections were ever accepted."""
        with self._lock:
            return len(self._links)

    def _newest_link(self, timeout: float) -> _Link:
        with self._lock:
            found = self._changed.wait_for(
                lambda: next((k for k in reversed(self._links) if k.open), None), timeout
            )
        if found is None:
            raise TimeoutError("no open Socket Mode connection")
        return found

    def push(
        self,
        kind: str,
        payload: dict[str, Any],
        retry_attempt: int | None = None,
        retry_reason: str = "",
        timeout: float = ACK_WAIT_SECONDS,
    ) -> str:
        """Send an envelope over the newest open connection, as Slack does; return its id.

        kind is "events_api", "interactive" or "slash_commands". Events always carry the retry
        fields; other kinds only when retry_attempt is given.
        """
        # Slack waits for a response payload only where one can change what the user sees.
        accepts = kind == "slash_commands" or payload.get("type") in (
            "view_submission",
            "block_suggestion",
        )
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts,
        }
        if kind == "events_api" or retry_attempt is not None:
            envelope.update(retry_attempt=retry_attempt or 0, retry_reason=retry_reason)
        link = self._newest_link(timeout)
        with self._lock:
            self.envelopes.append(envelope)
        link.connection.send(json.dumps(envelope))
        return str(envelope["envelope_id"])

    def wait_ack(self, envelope_id: str, timeout: float = ACK_WAIT_SECONDS) -> dict[str, Any]:
        """Return the ack of an envelope, waiting up to timeout for it."""
        with self._lock:
            acked = self._changed.wait_for(lambda: self.acks.get(envelope_id), timeout)
        if acked is None:
            raise TimeoutError(f"envelope {envelope_id} was not acknowledged")
        return acked

    def ask_to_reconnect(self, reason: str = "refresh_requested") -> None:
        """Tell the newest connection to reconnect, as Slack does before it closes one."""
        link = self._newest_link(ACK_WAIT_SECONDS)
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}}
        link.connection.send(json.dumps(message))

    def close_links(self) -> None:
        """Close every open Socket Mode connection from Slack's side."""
        with self._lock:
            links = [link for link in self._links if link.open]
        for link in links:
            link.connection.close()


def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value) if value else []
    return list(value or [])


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        return json.loads(value) if value else None
    return value


def _wire(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "message", "ts": message.ts, "user": message.user}
    body.update(text=message.text, blocks=message.blocks)
    if message.thread_ts:
        body["thread_ts"] = message.thread_ts
    if message.metadata:
        body["metadata"] = message.metadata
    if message.visible_to:
        body["visible_to"] = message.visible_to
    return body


def _block_lines(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind in ("section", "header"):
        lines = [str(block.get("text", {}).get("text", ""))]
        lines += [str(f.get("text", "")) for f in block.get("fields", [])]
        accessory = block.get("accessory") or {}
        if accessory.get("type") == "button":
            lines.append(f"[{accessory.get('text', {}).get('text', '?')}]")
        return lines
    if kind == "context":
        return ["  ".join(str(e.get("text", "")) for e in block.get("elements", []))]
    if kind == "actions":
        labels = [e.get("text", {}).get("text", "?") for e in block.get("elements", [])]
        return ["  ".join(f"[{label}]" for label in labels)]
    if kind == "divider":
        return ["----"]
    return [f"({kind} block)"]


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")
_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]*)>")
_SPECIAL = re.compile(r"<!(channel|here|everyone)>")


def readable(text: str, names: dict[str, str]) -> str:
    """Render mrkdwn the way a person sees it in Slack: names, dates, link texts, plain &<>."""
    text = _MENTION.sub(lambda m: "@" + names.get(m.group(1), m.group(1)), text)
    text = _DATE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", text)
    text = _SPECIAL.sub(lambda m: f"@{m.group(1)}", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _render(message: Message, indent: str, names: dict[str, str] | None = None) -> list[str]:
    names = names or {}
    head = names.get(message.user, message.user)
    if message.visible_to:
        head += f" (only visible to {names.get(message.visible_to, message.visible_to)})"
    if message.edits:
        head += " (edited)"
    body: list[str] = []
    for block in message.blocks:
        body.extend(_block_lines(block))
    if not body:
        body = [message.text]
    lines = [f"{indent}[{message.ts}] {head}:"]
    for text in body:
        text = readable(text, names)
        lines.extend(f"{indent}  {line}" for line in text.splitlines() or [""])
    return lines


def _make_handler(standin: SlackStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return  # requests carry tokens; the stand-in keeps its own call log instead

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8")
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/json"):
                args = json.loads(raw) if raw else {}
            else:
                args = dict(parse_qsl(raw, keep_blank_values=True))
            path = self.path.split("?", 1)[0]
            if path.startswith("/api/"):
                auth = self.headers.get("Authorization")
                if "token" in args and auth is None:
                    auth = f"Bearer {args.pop('token')}"
                status, headers, body = standin.handle_api(path[len("/api/") :], args, auth)
            elif path.startswith("/response/"):
                status, headers, body = standin.handle_response_url(path.rsplit("/", 1)[1], args)
            else:
                status, headers, body = 404, {}, {"ok": False, "error": "not_found"}
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


# -- the Slack side of a request to Pare: signing and sending ---------------------------------


def sign(secret: str, body: str | bytes, timestamp: int | None = None) -> dict[str, str]:
    """Return the headers Slack sends with a request: v0 HMAC-SHA256 of v0:timestamp:body."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    raw = body if isinstance(body, bytes) else body.encode()
    base = f"v0:{stamp}:".encode() + raw
    digest = hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def form_body(payload: dict[str, Any]) -> str:
    """Encode an interactive payload the way Slack posts it: payload=<json>, form-encoded."""
    return urlencode({"payload": json.dumps(payload)})


def send_signed(
    url: str,
    secret: str,
    body: str | bytes,
    content_type: str = "application/x-www-form-urlencoded",
    timestamp: int | str | None = None,
    retry_num: int | None = None,
    signature: str | None = None,
) -> tuple[int, str]:
    """POST a signed request to Pare's endpoint on 127.0.0.1; return (status, body)."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("the stand-in only sends to 127.0.0.1")
    headers = {"Content-Type": content_type, **sign(secret, body, _stamp(timestamp))}
    if isinstance(timestamp, str):
        # A timestamp Slack would never send, to test the refusal; the signature is then moot.
        headers["X-Slack-Request-Timestamp"] = timestamp
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def _stamp(timestamp: int | str | None) -> int | None:
    return timestamp if isinstance(timestamp, int) else None


def click_payload(
    user: str, channel: str, message_ts: str, action_id: str, value: str, response_url: str
) -> dict[str, Any]:
    """Build a block_actions payload for a button click, shaped like Slack's."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0STANDIN"},
        "api_app_id": "A0PARE",
        "token": "unused-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "trigger_id": f"{int(time.time())}.standin.trigger",
        "team": {"id": "T0STANDIN", "domain": "standin"},
        "channel": {"id": channel, "name": channel.lower()},
        "message": {"ts": message_ts, "type": "message"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"item:{value}",
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def submission_payload(user: str, view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Build a view_submission payload for an opened modal, shaped like Slack's.

    values maps block id to (action id, value); a select's value becomes its selected option.
    """
    state: dict[str, Any] = {}
    for block in view.get("blocks", []):
        block_id = block.get("block_id")
        if block.get("type") != "input" or block_id not in values:
            continue
        action_id, value = values[block_id]
        element = block["element"]
        if element["type"] == "static_select":
            option = next(o for o in element["options"] if o["value"] == str(value))
            state[block_id] = {action_id: {"type": "static_select", "selected_option": option}}
        else:
            state[block_id] = {action_id: {"type": element["type"], "value": value}}
    return {
        "type": "view_submission",
        "team": {"id": "T0STANDIN", "domain": "standin"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0STANDIN"},
        "api_app_id": "A0PARE",
        "token": "unused-verification-token",
        "trigger_id": f"{int(time.time())}.standin.trigger",
        "view": {**view, "state": {"values": state}, "hash": f"{time.time():.6f}"},
        "response_urls": [],
    }


def command_body(user: str, channel: str, command: str, text: str, response_url: str) -> str:
    """Build a slash command request body, form-encoded like Slack's."""
    fields = {
        "token": "unused-verification-token",
        "team_id": "T0STANDIN",
        "team_domain": "standin",
        "channel_id": channel,
        "channel_name": channel.lower(),
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A0PARE",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.standin.trigger",
    }
    return urlencode(fields)
