"""Events: the App Home being opened, the app being uninstalled or its tokens revoked."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from bot.selfservice import publish_home
from bot.slack import install
from bot.slack.app import AppContext

log = logging.getLogger(__name__)


def register(app: App, ctx: AppContext) -> None:
    """Register the events Pare listens to."""

    @app.event("app_home_opened")
    def on_home(event: dict[str, Any], client: WebClient) -> None:
        # Slack also sends this for the Messages tab; only the Home tab needs a view.
        if event.get("tab", "home") != "home":
            return
        publish_home(ctx.db, client, event["user"], ctx.settings.teams.admins)

    @app.event("app_uninstalled")
    def on_uninstalled(body: dict[str, Any]) -> None:
        # Posting stops until a working token shows the app was reinstalled.
        workspace = str(body.get("team_id") or "?")
        install.record(ctx.db, workspace, install.UNINSTALLED)
        log.error(
            "Slack workspace %s uninstalled Pare; posting paused until it is reinstalled",
            workspace,
        )

    @app.event("tokens_revoked")
    def on_tokens_revoked(body: dict[str, Any], event: dict[str, Any]) -> None:
        tokens = event.get("tokens")
        bots = tokens.get("bot") if isinstance(tokens, dict) else None
        # Only the count: the ids are Slack's, but an odd shape must not break the record.
        count = len(bots) if isinstance(bots, list) else 0
        workspace = str(body.get("team_id") or "?")
        if count:
            install.record(ctx.db, workspace, install.TOKENS_REVOKED)
        log.error(
            "Slack workspace %s revoked Pare's tokens (%s bot tokens); posting paused until "
            "a new SLACK_BOT_TOKEN works",
            workspace,
            count,
        )
