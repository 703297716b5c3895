"""The Bolt app: token and signing secret from settings, handlers, one error handler."""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.db import Database
from bot.errors import NotAChampion, PareError
from bot.logs import bolt_logger
from bot.settings import Settings
from bot.slack import ids, shape, text
from bot.slack.blocks import Payload, answer
from bot.slack.client import make_client

log = logging.getLogger(__name__)

LISTENER_WORKERS = 64


@dataclass(frozen=True)
class AppContext:
    """What listeners need besides the payload: settings and the database."""

    settings: Settings
    db: Database


def routing_keys(body: dict[str, Any]) -> str:
    """Reduce a payload to the ids worth logging (never text, tokens or the whole body)."""
    user = body.get("user_id") or (body.get("user") or {}).get("id")
    kind = body.get("type") or ("command" if "command" in body else "?")
    action = ",".join(a.get("action_id", "?") for a in body.get("actions") or [])
    event = (body.get("event") or {}).get("type")
    return f"type={kind} user={user} action={action or '-'} event={event or '-'}"


def origin(body: dict[str, Any]) -> dict[str, Any]:
    """Return where a modal was opened from, as kept in its private_metadata (our own JSON)."""
    raw = (body.get("view") or {}).get("private_metadata") or ""
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Return the channel and user an interaction came from (for a modal, where it opened)."""
    channel = body.get("channel_id") or (body.get("channel") or {}).get("id")
    channel = channel or (body.get("container") or {}).get("channel_id")
    channel = channel or origin(body).get("channel")
    user = body.get("user_id") or (body.get("user") or {}).get("id")
    return channel, user


def tell(client: WebClient, body: dict[str, Any], respond: Any, payload: Payload) -> None:
    """Show payload to the user who acted, only to them, where they are."""
    channel, user = where(body)
    if channel and user:
        try:
            client.chat_postEphemeral(
                channel=channel, user=user, text=payload.text, blocks=payload.blocks
            )
            return
        except SlackApiError as exc:
            # Direct messages with the app refuse ephemerals; the response_url still works.
            log.info("ephemeral refused (%s), trying response_url", exc.response.get("error"))
    if respond is not None and body.get("response_url"):
        respond(
            text=payload.text,
            blocks=payload.blocks,
            response_type="ephemeral",
            replace_original=False,
        )
    elif user and not channel:
        # A click in the App Home has no channel; the app's own DM with the user is the place.
        client.chat_postMessage(channel=user, text=payload.text, blocks=payload.blocks)
    else:
        log.warning("nowhere to answer: %s", routing_keys(body))


def button_value(
    client: WebClient, body: dict[str, Any], respond: Any, action: dict[str, Any]
) -> str | None:
    """Return a clicked button's row id, or tell the clicker the button is no longer valid."""
    value = action.get("value")
    if ids.row_id(value) is not None:
        return value
    # Pare only ever puts decimal row ids on buttons: this one is stale or not Pare's.
    user = body["user"]["id"]
    log.info("click refused, not a row id: action=%s user=%s", action["action_id"], user)
    message = text.button_invalid()
    tell(client, body, respond, answer([message], message))
    return None


def explain_error(error: Exception, body: dict[str, Any], client: WebClient, respond: Any) -> None:
    """Turn an error into a polite message for the user; unknown ones get a logged reference."""
    if isinstance(error, NotAChampion):
        lines = [text.refusal(error.team, error.champions)]
    elif isinstance(error, PareError):
        log.info("known error: %s (%s)", type(error).__name__, routing_keys(body))
        lines = [text.error_known(str(error))]
    else:
        reference = uuid.uuid4().hex[:10]
        # The frames, not the message: an exception's text can quote the payload it choked on.
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error(
            "unexpected error ref=%s %s: %s\n%s",
            reference,
            routing_keys(body),
            type(error).__name__,
            frames,
        )
        lines = [text.error_unknown(reference)]
    try:
        tell(client, body, respond, answer(lines, lines[0]))
    except SlackApiError as exc:
        log.warning("could not tell the user about an error: %s", exc.response.get("error"))


def build_app(
    settings: Settings,
    db: Database,
    *,
    process_before_response: bool = False,
    client: WebClient | None = None,
) -> App:
    """Build the Bolt app with every handler registered and the one error handler."""
    from handlers import register_all

    _, secret = settings.require_slack()
    app = App(
        signing_secret=secret,
        client=client or make_client(settings),
        process_before_response=process_before_response,
        # Bolt's own loggers would log refused and unhandled requests' bodies.
        logger=bolt_logger(),
        # Bolt's own request logging includes bodies; our error handler logs ids instead.
        raise_error_for_unhandled_request=False,
        # A listener acks only once a worker runs it; Bolt's default ten workers made clicks
        # queue behind earlier decisions' slow work, so the ack waited too.
        listener_executor=ThreadPoolExecutor(LISTENER_WORKERS, "pare-listener"),
    )

    @app.middleware
    def _check_shape(req: BoltRequest, next: Callable[[], BoltResponse]) -> BoltResponse | None:
        # Over HTTP, bot.web checks the shape before dispatch (after its own signature check);
        # Socket Mode requests come straight here from Slack's authenticated connection.
        refused = shape.refusal(req.body) if req.mode == "socket_mode" else None
        return refused if refused is not None else next()

    @app.error
    def _on_error(error: Exception, body: dict[str, Any], client: WebClient, respond: Any):
        explain_error(error, body or {}, client, respond)
        return BoltResponse(status=200, body="")

    register_all(app, AppContext(settings, db))
    return app
