"""The minimal shape of a Slack request, checked once before any listener sees it.

Listeners index payloads directly (`body["actions"][0]`); a signed but malformed body would
make them fail with a 500 and an unexpected-error reply. Checking here turns that into a 400
before anything acts on the body, and acknowledges the events Pare does not listen to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt import BoltResponse

log = logging.getLogger(__name__)

# Must match the listeners in handlers/events.py.
EVENTS = frozenset({"app_home_opened", "app_uninstalled", "tokens_revoked"})

DISPATCH = "dispatch"
IGNORE = "ignore"
MALFORMED = "malformed"


@dataclass(frozen=True)
class Verdict:
    """What to do with a request, and a reason to log (never quoting the body)."""

    action: str
    reason: str = ""


def _str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _user_ok(body: dict[str, Any]) -> bool:
    user = body.get("user")
    return isinstance(user, dict) and _str(user.get("id"))


def _actions_ok(actions: Any) -> bool:
    if not isinstance(actions, list) or not actions:
        return False
    return all(isinstance(a, dict) and _str(a.get("action_id")) for a in actions)


def _view_ok(view: Any) -> bool:
    if not isinstance(view, dict) or not _str(view.get("callback_id")):
        return False
    state = view.get("state")
    return isinstance(state, dict) and isinstance(state.get("values"), dict)


def _event(body: dict[str, Any]) -> Verdict:
    event = body.get("event")
    if not isinstance(event, dict) or not _str(event.get("type")):
        return Verdict(MALFORMED, "event_callback without an event object")
    if event["type"] not in EVENTS:
        return Verdict(IGNORE, "event type Pare does not listen to")
    if event["type"] == "app_home_opened" and not _str(event.get("user")):
        return Verdict(MALFORMED, "app_home_opened without a user")
    return Verdict(DISPATCH)


def check(body: Any) -> Verdict:
    """Return whether to dispatch, ignore (acknowledge only) or refuse a parsed body."""
    if not isinstance(body, dict) or not body:
        return Verdict(MALFORMED, "not a form or JSON object")
    if "ssl_check" in body:
        return Verdict(DISPATCH)
    if "command" in body:
        if not (_str(body.get("command")) and _str(body.get("user_id"))):
            return Verdict(MALFORMED, "command without a command or user")
        return Verdict(DISPATCH)
    kind = body.get("type")
    if not _str(kind):
        return Verdict(MALFORMED, "no payload type")
    if kind == "url_verification":
        ok = _str(body.get("challenge"))
        return Verdict(DISPATCH) if ok else Verdict(MALFORMED, "no challenge")
    if kind == "event_callback":
        return _event(body)
    if kind == "block_actions":
        if not (_user_ok(body) and _actions_ok(body.get("actions"))):
            return Verdict(MALFORMED, "block_actions without a user or actions")
        return Verdict(DISPATCH)
    if kind == "view_submission":
        if not (_user_ok(body) and _view_ok(body.get("view"))):
            return Verdict(MALFORMED, "view_submission without a user or view state")
        return Verdict(DISPATCH)
    return Verdict(IGNORE, "payload type Pare does not listen to")


def refusal(body: Any) -> BoltResponse | None:
    """Return the answer to a body no listener should see (400 or a bare ack), or None."""
    verdict = check(body)
    if verdict.action == MALFORMED:
        log.warning("malformed request refused: %s", verdict.reason)
        return BoltResponse(status=400, body="malformed request")
    if verdict.action == IGNORE:
        log.info("request acknowledged and ignored: %s", verdict.reason)
        return BoltResponse(status=200, body="")
    return None
