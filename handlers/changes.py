"""The Undo button on a change's outcome message."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.removal import may_undo, undo_change
from bot.removal.messages import UNDO_ACTION
from bot.slack.app import AppContext, button_value

log = logging.getLogger(__name__)


def register(app: App, ctx: AppContext) -> None:
    """Register the Undo button."""

    @app.action(UNDO_ACTION)
    def on_undo(ack: Ack, body: dict[str, Any], client: WebClient, respond: Any) -> None:
        # AWS calls take longer than Slack's 3 seconds: acknowledge first.
        ack()
        change_id = button_value(client, body, respond, body["actions"][0])
        if change_id is None:
            return
        user = body["user"]["id"]
        log.info("undo click: change=%s user=%s", change_id, user)
        may_undo(ctx.db, change_id, user, ctx.settings.teams.admins)
        undo_change(ctx.settings, ctx.db, change_id, user=user, slack=client)
