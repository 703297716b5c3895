"""Access Advisor: GetServiceLastAccessedDetails output turned into usage evidence.

AWS keeps last-accessed data for 400 days, at service level for every service and at action
level for a growing set of services (their `TrackedActionsLastAccessed`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain import UsageEvidence

TRACKING_PERIOD = timedelta(days=400)


def _time(value: object) -> datetime | None:
    """Return a date, None for no date; raise ValueError for a value that is not a date."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"{str(value)[:40]!r} is not a date")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read_time(value: object, what: str, problems: list[str]) -> datetime | None:
    try:
        return _time(value)
    except ValueError:
        # A date that cannot be read may be a recent use: the evidence proves nothing then.
        problems.append(f"{what} {str(value)[:40]!r} is not a date")
        return None


def from_last_accessed(details: dict[str, Any], read_at: datetime | None = None) -> UsageEvidence:
    """Build evidence from one principal's GetServiceLastAccessedDetails response (all pages).

    A job that did not complete, a response still marked truncated, or one whose fields cannot
    be read proves nothing: the evidence carries a problem and the principal gets no
    recommendation.
    """
    problems: list[str] = []
    completed = _read_time(details.get("JobCompletionDate"), "JobCompletionDate", problems)
    read = read_at or completed or datetime.now(UTC)
    evidence = UsageEvidence(
        source="access_advisor",
        covered_from=completed - TRACKING_PERIOD if completed else None,
        covered_to=completed,
        read_at=read,
        action_level=details.get("JobType", "SERVICE_LEVEL") == "ACTION_LEVEL",
        listed_services=set(),
        problems=problems,
    )
    status = details.get("JobStatus")
    if status != "COMPLETED":
        error = details.get("Error")
        message = error.get("Message", "") if isinstance(error, dict) else error or ""
        problems.append(f"last-accessed job {status or 'unknown'} {str(message)[:200]}".strip())
    if details.get("IsTruncated"):
        problems.append("the last-accessed list is truncated (a page is missing)")

    entries = details.get("ServicesLastAccessed")
    if not isinstance(entries, list):
        problems.append("ServicesLastAccessed is not a list")
        entries = []
    for entry in entries:
        if not isinstance(entry, dict):
            problems.append("a ServicesLastAccessed entry is not an object")
            continue
        namespace = str(entry.get("ServiceNamespace", "")).lower()
        if not namespace:
            continue
        evidence.listed_services.add(namespace)
        last = _read_time(
            entry.get("LastAuthenticated"), f"{namespace} LastAuthenticated", problems
        )
        if last is not None:
            evidence.services[namespace] = last
        tracked = entry.get("TrackedActionsLastAccessed")
        if tracked is None:
            evidence.service_level_only.add(namespace)
            continue
        if not isinstance(tracked, list):
            problems.append(f"{namespace} TrackedActionsLastAccessed is not a list")
            continue
        # Only the actions listed are tracked one by one; any other action of the service may
        # have been used without a trace here.
        names = evidence.tracked_actions.setdefault(namespace, set())
        for action in tracked:
            name = action.get("ActionName") if isinstance(action, dict) else None
            if not isinstance(name, str) or not name:
                problems.append(f"{namespace}: a tracked action has no ActionName")
                continue
            key = f"{namespace}:{name}".lower()
            names.add(key)
            seen = _read_time(action.get("LastAccessedTime"), f"{key} LastAccessedTime", problems)
            if seen is not None:
                evidence.actions[key] = seen
    return evidence


def from_airiam_entry(entry: dict[str, Any], read_at: datetime) -> UsageEvidence:
    """Build service-level evidence from a snapshot's `LastAccessed` list (AirIAM's format).

    Such a list names only the services that were used, so it cannot say whether a granted
    service is missing from it; its services are treated as seen, nothing more.
    """
    evidence = UsageEvidence(
        source="access_advisor",
        covered_from=read_at - TRACKING_PERIOD,
        covered_to=read_at,
        read_at=read_at,
        action_level=False,
    )
    for item in entry.get("LastAccessed", []):
        namespace = str(item.get("ServiceNamespace", "")).lower()
        seen = _read_time(item.get("LastAccessed"), f"{namespace} LastAccessed", evidence.problems)
        if namespace and seen:
            evidence.services[namespace] = seen
    return evidence
