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
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).replace("Z", "+00:00")
        moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def from_last_accessed(details: dict[str, Any], read_at: datetime | None = None) -> UsageEvidence:
    """Build evidence from one principal's GetServiceLastAccessedDetails response (all pages).

    A job that did not complete, or a response still marked truncated, proves nothing: the
    evidence carries a problem and the principal gets no recommendation.
    """
    completed = _time(details.get("JobCompletionDate"))
    read = read_at or completed or datetime.now(UTC)
    evidence = UsageEvidence(
        source="access_advisor",
        covered_from=completed - TRACKING_PERIOD if completed else None,
        covered_to=completed,
        read_at=read,
        action_level=details.get("JobType", "SERVICE_LEVEL") == "ACTION_LEVEL",
        listed_services=set(),
    )
    status = details.get("JobStatus")
    if status != "COMPLETED":
        error = (details.get("Error") or {}).get("Message", "")
        evidence.problems.append(f"last-accessed job {status or 'unknown'} {error}".strip())
    if details.get("IsTruncated"):
        evidence.problems.append("the last-accessed list is truncated (a page is missing)")

    for entry in details.get("ServicesLastAccessed", []):
        namespace = str(entry.get("ServiceNamespace", "")).lower()
        if not namespace:
            continue
        evidence.listed_services.add(namespace)
        last = _time(entry.get("LastAuthenticated"))
        if last is not None:
            evidence.services[namespace] = last
        tracked = entry.get("TrackedActionsLastAccessed")
        if tracked is None:
            evidence.service_level_only.add(namespace)
            continue
        for action in tracked:
            seen = _time(action.get("LastAccessedTime"))
            if seen is not None:
                evidence.actions[f"{namespace}:{action['ActionName']}".lower()] = seen
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
        seen = _time(item.get("LastAccessed"))
        if namespace and seen:
            evidence.services[namespace] = seen
    return evidence
