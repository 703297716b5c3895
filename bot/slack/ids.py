"""Action, block and callback ids, in one place (each well under Slack's 255 characters)."""

from __future__ import annotations

import re

APPROVE = "pare.approve"
DEFER = "pare.defer"
EXEMPT = "pare.exempt"
APPROVE_ALL = "pare.approve_all"
REVOKE = "pare.revoke"
# Approve decides at once; Defer and Exempt first open a modal that asks for period and reason.
DECISION_ACTIONS = re.compile(r"^pare\.approve$")
MODAL_ACTIONS = re.compile(r"^pare\.(defer|exempt)$")
KIND_BY_ACTION = {APPROVE: "approve", DEFER: "defer", EXEMPT: "exempt"}

DEFER_VIEW = "pare.defer_view"
EXEMPT_VIEW = "pare.exempt_view"
KIND_BY_VIEW = {DEFER_VIEW: "defer", EXEMPT_VIEW: "exempt"}
VIEW_BY_KIND = {kind: view for view, kind in KIND_BY_VIEW.items()}
PERIOD_BLOCK = "period"
PERIOD_INPUT = "period_days"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_text"

COMMAND = "/pare"

# Message metadata marks what Pare posted, so a retry can find a post it failed to record.
DIGEST_EVENT = "pare_digest_part"
LEADERBOARD_EVENT = "pare_leaderboard"
ESCALATION_EVENT = "pare_escalation"


def item_block(item_id: int | str) -> str:
    """Return the block id of a digest row."""
    return f"item:{item_id}"


def actions_block(item_id: int | str) -> str:
    """Return the block id of a digest row's buttons."""
    return f"act:{item_id}"


def principal_block(item_id: int | str) -> str:
    """Return the block id of a principal's heading (named after its first row)."""
    return f"who:{item_id}"


# Row ids are positive 64-bit integers; 18 digits always fit. int() alone would also take
# " 1 ", "1_0" and other scripts' digits, none of which Pare ever puts on a button.
MAX_ROW_ID_DIGITS = 18


def row_id(value: object) -> int | None:
    """Return a button value as a row id, or None when it is not one Pare could have made."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ROW_ID_DIGITS:
        return None
    if not (value.isascii() and value.isdigit()) or value.startswith("0"):
        return None
    return int(value)
