"""Thin Slack listeners, grouped by kind; each group registers itself on the app."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.app import AppContext
from handlers import actions, changes, commands, events, views


def register_all(app: App, ctx: AppContext) -> None:
    """Register every listener group."""
    actions.register(app, ctx)
    commands.register(app, ctx)
    events.register(app, ctx)
    views.register(app, ctx)
    changes.register(app, ctx)
