"""Action, block and callback ids, in one place (each well under Slack's 255 characters)."""

from __future__ import annotations

import re

APPROVE = "pare.approve"
DEFER = "pare.defer"
DECISION_ACTIONS = re.compile(r"^pare\.(approve|defer)$")
KIND_BY_ACTION = {APPROVE: "approve", DEFER: "defer"}

COMMAND = "/pare"

# Message metadata marks what Pare posted, so a retry can find a post it failed to record.
DIGEST_EVENT = "pare_digest_part"
LEADERBOARD_EVENT = "pare_leaderboard"


def item_block(item_id: int | str) -> str:
    """Return the block id of a digest row."""
    return f"item:{item_id}"


def actions_block(item_id: int | str) -> str:
    """Return the block id of a digest row's buttons."""
    return f"act:{item_id}"
