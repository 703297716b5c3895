"""Slack messages about changes: the outcome posted in the digest's thread, with Undo.

Every name from AWS (principal, actions, reasons that quote them) is escaped before it goes
into mrkdwn; the Undo button's value is the change's row id, nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.db import Database
from bot.removal.service import PASSWORD_NOTE, ChangeResult, result_of
from bot.slack.escape import clip, clip_escaped, escape
from models import Change, DigestItem

log = logging.getLogger(__name__)

UNDO_ACTION = "pare.undo"
MAX_SECTION = 3000
MAX_FALLBACK = 300
SHOWN_ACTIONS = 40

HEADLINES = {
    "applied": ":scissors: Removed",
    "refused": ":no_entry: AWS refused",
    "failed": ":warning: Failed, needs an operator",
    "rolled_back": ":leftwards_arrow_with_hook: Rolled back",
    "dropped": ":information_source: Nothing removed",
    "dry_run": ":memo: Dry run, would remove",
}
KIND_LABELS = {
    "trim_permissions": "unused permissions",
    "deactivate_access_key": "access key deactivated",
    "delete_access_key": "access key deleted after its grace period",
    "delete_login_profile": "console password removed",
    "quarantine_role": "role quarantined (deny-all and tag)",
    "delete_role": "role deleted after its grace period",
    "undo": "undo",
}


def _principal_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def outcome_text(result: ChangeResult) -> str:
    """Return the short top-level fallback of an outcome message."""
    head = HEADLINES.get(result.status, result.status).split(" ", 1)[-1]
    return clip(
        f"Pare: {head}: {KIND_LABELS.get(result.kind, result.kind)} "
        f"of {_principal_name(result.principal)}",
        MAX_FALLBACK,
    )


def outcome_blocks(result: ChangeResult) -> list[dict[str, Any]]:
    """Return the blocks of an outcome message (within Slack's limits, text escaped)."""
    name = escape(_principal_name(result.principal))
    kind = KIND_LABELS.get(result.kind, result.kind)
    if result.kind == "undo":
        lines = [
            f"*:leftwards_arrow_with_hook: Undo of change {result.parent_id}* on `{name}`: "
            f"{escape(result.status.replace('_', ' '))}"
        ]
        if result.removed:
            lines.append("Restored: " + _listed(result.removed))
    else:
        lines = [
            f"*{HEADLINES.get(result.status, result.status)}* {kind} on `{name}` "
            f"(change {result.change_id})"
        ]
        if result.removed and result.status in ("applied", "dry_run"):
            lines.append("Removed: " + _listed(result.removed))
    for kept in result.kept[:10]:
        lines.append(f"Kept {escape(kept['what'])}: {escape(kept['why'])}")
    if result.reason and result.status in ("refused", "failed", "rolled_back"):
        lines.append(f"Reason: {escape(result.reason)}")
    section = clip_escaped("\n".join(lines), MAX_SECTION)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": section}}
    ]
    if result.status == "applied" and result.kind not in ("undo", "delete_access_key"):
        note = "Only this team's champions can undo."
        if result.kind == "delete_login_profile":
            note += f" Undo: {PASSWORD_NOTE}."
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        blocks.append(
            {
                "type": "actions",
                "block_id": f"change:{result.change_id}",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Undo"},
                        "action_id": UNDO_ACTION,
                        "value": str(result.change_id),
                    }
                ],
            }
        )
    return blocks


def _listed(actions: list[str]) -> str:
    shown = ", ".join(f"`{escape(a)}`" for a in actions[:SHOWN_ACTIONS])
    more = len(actions) - SHOWN_ACTIONS
    return shown + (f" and {more} more" if more > 0 else "")


def thread_of(db: Database, change_id: int) -> tuple[str, str] | None:
    """Return the channel and thread ts of the digest that showed the change's finding."""
    with db.session() as session:
        change = session.get_one(Change, change_id)
        decision = change.decision
        if decision is None or decision.digest_item_id is None:
            return None
        item = session.get(DigestItem, decision.digest_item_id)
        if item is None or item.message.ts is None:
            return None
        message = item.message
        return message.channel, message.thread_ts or message.ts


def post_outcome(db: Database, slack: Any, change_id: int) -> str | None:
    """Post a change's outcome once in its digest thread; return the message ts."""
    with db.session() as session:
        change = session.get_one(Change, change_id)
        if change.slack_ts:
            return change.slack_ts
    where = thread_of(db, change_id)
    if where is None:
        log.info("no digest thread for change: change=%s", change_id)
        return None
    result = result_of(db, change_id)
    try:
        response = slack.chat_postMessage(
            channel=where[0],
            thread_ts=where[1],
            text=outcome_text(result),
            blocks=outcome_blocks(result),
        )
    except SlackApiError as exc:
        # The change stands whether or not Slack heard of it; the next run posts again.
        log.warning("outcome not posted: change=%s error=%s", change_id, exc.response.get("error"))
        return None
    with db.session() as session:
        change = session.get_one(Change, change_id)
        change.slack_channel = where[0]
        change.slack_ts = str(response.get("ts") or "")
    log.info("outcome posted: change=%s channel=%s", change_id, where[0])
    return change.slack_ts
