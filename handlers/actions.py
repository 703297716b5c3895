"""Button clicks on digest rows: approve and defer."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltRequest
from slack_sdk import WebClient

from bot.decisions import decide
from bot.digest import update_message
from bot.slack import ids, text
from bot.slack.app import AppContext, tell
from bot.slack.blocks import answer

log = logging.getLogger(__name__)


def register(app: App, ctx: AppContext) -> None:
    """Register the decision buttons."""

    @app.action(ids.DECISION_ACTIONS)
    def on_decision(
        ack: Ack, body: dict[str, Any], client: WebClient, respond: Any, request: BoltRequest
    ) -> None:
        ack()
        action = body["actions"][0]
        user = body["user"]["id"]
        retry = (request.headers.get("x-slack-retry-num") or [None])[0]
        log.info("click: action=%s item=%s user=%s", action["action_id"], action["value"], user)
        result = decide(
            ctx.db,
            action["value"],
            user,
            ids.KIND_BY_ACTION[action["action_id"]],
            admins=ctx.settings.teams.admins,
            defer_days=ctx.settings.defer_days,
        )
        if result.created:
            update_message(ctx.settings, ctx.db, client, result.message_id)
            return
        if retry:
            log.info("redelivered click ignored: item=%s retry=%s", action["value"], retry)
        message = text.already_decided(
            result.kind, result.decided_by, result.decided_at, result.defer_until
        )
        tell(client, body, respond, answer([message], message))
