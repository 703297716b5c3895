"""Modal submissions: Defer (period and reason) and Exempt (reason)."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.decisions import decide
from bot.digest import show_outcome
from bot.slack import ids, text
from bot.slack.app import AppContext, origin, tell
from bot.slack.blocks import answer

log = logging.getLogger(__name__)

DECISION_VIEWS = re.compile(r"^pare\.(defer|exempt)_view$")
EXEMPT_NEEDS_REASON = "An exemption needs a reason: auditors and the team will read it."
BAD_PERIOD = "Choose one of the offered periods."


def _value(state: dict[str, Any], block: str, action: str) -> dict[str, Any]:
    return (state.get(block) or {}).get(action) or {}


def register(app: App, ctx: AppContext) -> None:
    """Register the decision modals."""
    admins = ctx.settings.teams.admins

    @app.view(DECISION_VIEWS)
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        kind = ids.KIND_BY_VIEW[view["callback_id"]]
        state = (view.get("state") or {}).get("values") or {}
        reason = (_value(state, ids.REASON_BLOCK, ids.REASON_INPUT).get("value") or "").strip()
        days = ctx.settings.defer_days
        if kind == "exempt" and not reason:
            ack(response_action="errors", errors={ids.REASON_BLOCK: EXEMPT_NEEDS_REASON})
            return
        if kind == "defer":
            chosen = _value(state, ids.PERIOD_BLOCK, ids.PERIOD_INPUT).get("selected_option")
            raw = str((chosen or {}).get("value") or days)
            allowed = {str(d) for d in (*text.DEFER_PERIODS, days)}
            if raw not in allowed:
                ack(response_action="errors", errors={ids.PERIOD_BLOCK: BAD_PERIOD})
                return
            days = int(raw)
        # Closing the modal first keeps within Slack's 3 seconds; the decision follows.
        ack()
        where = origin(body)
        user = body["user"]["id"]
        item = str(where.get("item"))
        if ids.row_id(item) is None:
            # Our own private_metadata always names a row; anything else is not Pare's modal.
            log.info("modal refused, no row id: kind=%s user=%s", kind, user)
            message = text.button_invalid()
            tell(client, body, None, answer([message], message))
            return
        log.info("modal submitted: kind=%s item=%s user=%s", kind, item, user)
        result = decide(ctx.db, item, user, kind, admins=admins, defer_days=days, reason=reason)
        if result.created:
            show_outcome(ctx.settings, ctx.db, client, [result], where, None)
            return
        message = text.already_decided(
            result.kind, result.decided_by, result.decided_at, result.defer_until
        )
        tell(client, body, None, answer([message], message))
