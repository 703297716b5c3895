"""Whether Pare may post: an uninstalled app or revoked tokens pause posting until reinstalled."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from bot.db import Database
from bot.slack.client import error_code
from models import SlackInstall

log = logging.getLogger(__name__)

ACTIVE = "active"
UNINSTALLED = "uninstalled"
TOKENS_REVOKED = "tokens_revoked"


def record(db: Database, workspace: str, state: str) -> None:
    """Record a workspace's install state (from Slack's lifecycle events)."""
    # app_uninstalled and tokens_revoked arrive together: insert-or-update in one statement so
    # the second does not collide with the first's new row.
    now = datetime.now(UTC)
    with db.session() as session:
        insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
        statement = insert(SlackInstall).values(workspace=workspace, state=state, changed_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[SlackInstall.workspace],
            set_={"state": state, "changed_at": now},
            where=SlackInstall.state != state,
        )
        session.execute(statement)
    log.warning("Slack workspace %s is now %s", workspace, state)


def paused(db: Database, client: WebClient) -> str | None:
    """Return why posting is paused, or None; a working token (reinstalled) lifts the pause."""
    with db.session() as session:
        stopped = session.scalars(select(SlackInstall).where(SlackInstall.state != ACTIVE)).all()
        if not stopped:
            return None
        states = {row.workspace: row.state for row in stopped}
    # One cheap call tells whether the operator has reinstalled the app and set a new token.
    try:
        workspace = str(client.auth_test().get("team_id") or "")
    except SlackApiError as exc:
        log.warning(
            "posting paused (%s); auth.test says %s: reinstall Pare and set SLACK_BOT_TOKEN",
            ",".join(f"{w}={s}" for w, s in sorted(states.items())),
            error_code(exc),
        )
        return next(iter(states.values()))
    # The token works again, so the app was reinstalled (one bot token serves one workspace).
    for paused_workspace in states:
        record(db, paused_workspace, ACTIVE)
    log.warning("Slack token works again (workspace %s); posting resumes", workspace or "?")
    return None
