"""The `/pare` slash command."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.selfservice import answer_command
from bot.slack import ids
from bot.slack.app import AppContext


def register(app: App, ctx: AppContext) -> None:
    """Register /pare."""

    @app.command(ids.COMMAND)
    def on_pare(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        ack()
        payload = answer_command(ctx.db, command["user_id"], command.get("text") or "")
        respond(text=payload.text, blocks=payload.blocks, response_type="ephemeral")
