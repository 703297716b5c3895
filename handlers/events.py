"""Events: the app being uninstalled or its tokens revoked."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App

from bot.slack.app import AppContext

log = logging.getLogger(__name__)


def register(app: App, ctx: AppContext) -> None:
    """Register the lifecycle events."""

    @app.event("app_uninstalled")
    def on_uninstalled(body: dict[str, Any]) -> None:
        # Every later post fails with account_inactive or invalid_auth; say why once, loudly.
        log.error(
            "Slack workspace %s uninstalled Pare; digests fail until it is reinstalled",
            body.get("team_id"),
        )

    @app.event("tokens_revoked")
    def on_tokens_revoked(body: dict[str, Any], event: dict[str, Any]) -> None:
        tokens = event.get("tokens") or {}
        log.error(
            "Slack workspace %s revoked Pare's tokens (bot users: %s); set a new SLACK_BOT_TOKEN",
            body.get("team_id"),
            ",".join(tokens.get("bot") or []) or "-",
        )
