"""Button clicks: approve, approve all, defer and exempt (which open a modal), revoke."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltRequest
from slack_sdk import WebClient

from bot.decisions import authorize, decide, decide_all, revoke, standing
from bot.digest import show_outcome
from bot.selfservice import publish_home
from bot.slack import blocks, ids, text
from bot.slack.app import AppContext, button_value, tell, where
from bot.slack.blocks import answer

log = logging.getLogger(__name__)


def _retry(request: BoltRequest) -> str | None:
    """Return Slack's redelivery count (HTTP header, or Socket Mode's retry_attempt)."""
    return (request.headers.get("x-slack-retry-num") or [None])[0]


def tell_decided(client: WebClient, body: dict[str, Any], respond: Any, result: Any) -> None:
    """Tell a later clicker who decided what, and when."""
    message = text.already_decided(
        result.kind, result.decided_by, result.decided_at, result.defer_until
    )
    tell(client, body, respond, answer([message], message))


def origin_of(body: dict[str, Any]) -> dict[str, Any]:
    """Return where a click happened, to carry through a modal (ids and our own URLs only)."""
    container = body.get("container") or {}
    channel, _ = where(body)
    found: dict[str, Any] = {"channel": channel, "ts": container.get("message_ts")}
    if container.get("is_ephemeral") and body.get("response_url"):
        found["response_url"] = body["response_url"]
    return found


def clicked(
    client: WebClient, body: dict[str, Any], respond: Any, what: str = "item"
) -> tuple[str, str, str] | None:
    """Return (action id, user, row id) of a button click, or None if its value is stale."""
    action = body["actions"][0]
    user = body["user"]["id"]
    value = button_value(client, body, respond, action)
    if value is None:
        return None
    log.info("click: action=%s %s=%s user=%s", action["action_id"], what, value, user)
    return action["action_id"], user, value


def register(app: App, ctx: AppContext) -> None:
    """Register the decision buttons."""
    admins = ctx.settings.teams.admins

    @app.action(ids.APPROVE)
    def on_approve(
        ack: Ack, body: dict[str, Any], client: WebClient, respond: Any, request: BoltRequest
    ) -> None:
        ack()
        click = clicked(client, body, respond)
        if click is None:
            return
        _, user, value = click
        result = decide(ctx.db, value, user, "approve", admins=admins)
        if result.created:
            show_outcome(ctx.settings, ctx.db, client, [result], origin_of(body), respond)
            return
        if _retry(request):
            log.info("redelivered click: item=%s retry=%s", value, _retry(request))
        tell_decided(client, body, respond, result)

    @app.action(ids.APPROVE_ALL)
    def on_approve_all(ack: Ack, body: dict[str, Any], client: WebClient, respond: Any) -> None:
        ack()
        click = clicked(client, body, respond)
        if click is None:
            return
        _, user, value = click
        bulk = decide_all(ctx.db, value, user, admins=admins)
        if bulk.made:
            show_outcome(ctx.settings, ctx.db, client, bulk.made, origin_of(body), respond)
            return
        message = text.approved_all(bulk.already)
        tell(client, body, respond, answer([message], message))

    @app.action(ids.MODAL_ACTIONS)
    def on_modal_button(ack: Ack, body: dict[str, Any], client: WebClient, respond: Any) -> None:
        # The modal must open within the trigger's 3 seconds, so ack and open at once.
        ack()
        click = clicked(client, body, respond)
        if click is None:
            return
        action_id, user, value = click
        kind = ids.KIND_BY_ACTION[action_id]
        target = authorize(ctx.db, value, user, admins, kind)
        earlier = standing(ctx.db, target.item_id)
        if earlier is not None:
            tell_decided(client, body, respond, earlier)
            return
        view = blocks.decision_modal(
            kind,
            str(target.item_id),
            blocks.subject(target.shown),
            ctx.settings.defer_days,
            origin_of(body),
        )
        client.views_open(trigger_id=body["trigger_id"], view=view)

    @app.action(ids.REVOKE)
    def on_revoke(ack: Ack, body: dict[str, Any], client: WebClient, respond: Any) -> None:
        ack()
        click = clicked(client, body, respond, "decision")
        if click is None:
            return
        _, user, value = click
        result = revoke(ctx.db, value, user, admins=admins)
        if result.created:
            show_outcome(ctx.settings, ctx.db, client, [], {}, None, revoked=result.decision_id)
        publish_home(ctx.db, client, user, admins)
