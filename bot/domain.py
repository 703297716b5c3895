"""Pare's domain types: what AWS readers return and what the analysis produces.

Everything here is plain data, with no boto3 and no database, so it can be built from a live
account, an exported file or a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

PrincipalKind = Literal["role", "user"]
FindingKind = Literal["unused_role", "unused_access_key", "unused_password", "unused_permission"]
FindingStatus = Literal["unused", "unknown", "too_new", "excluded"]
DataState = Literal["complete", "too_new", "incomplete", "unreadable", "stale", "excluded"]

FINDING_KINDS: tuple[FindingKind, ...] = (
    "unused_role",
    "unused_access_key",
    "unused_password",
    "unused_permission",
)


@dataclass(frozen=True)
class Policy:
    """One policy as it applies to a principal: inline, managed, or through a group."""

    name: str
    document: dict[str, Any]
    # inline | managed | aws_managed | group_inline | group_managed
    origin: str
    arn: str | None = None
    group: str | None = None
    version_id: str | None = None
    attached_at: datetime | None = None
    # Other principals this managed policy is attached to (its blast radius).
    attached_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessKey:
    """An access key of a user, with its last use."""

    key_id: str
    status: str
    created_at: datetime | None
    last_used_at: datetime | None
    last_used_service: str | None = None


@dataclass(frozen=True)
class LoginProfile:
    """A user's console password."""

    created_at: datetime | None
    last_used_at: datetime | None


@dataclass
class PrincipalRecord:
    """An IAM role or user with everything that grants it access."""

    account_id: str
    arn: str
    kind: PrincipalKind
    name: str
    path: str = "/"
    created_at: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    policies: list[Policy] = field(default_factory=list)
    boundary_arn: str | None = None
    last_used_at: datetime | None = None
    last_used_region: str | None = None
    # Whether last-used data for this principal was read at all (RoleLastUsed, key last used).
    last_used_known: bool = True
    access_keys: list[AccessKey] = field(default_factory=list)
    login_profile: LoginProfile | None = None
    groups: list[str] = field(default_factory=list)
    # Reasons its data could not be read completely; any entry makes it fail closed.
    read_problems: list[str] = field(default_factory=list)


@dataclass
class UsageEvidence:
    """What one evidence source says a principal used, and over which time.

    `services` and `actions` map a service prefix or a lowercased `service:action` to the last
    time it was seen. `covered_from`..`covered_to` is the time the source can vouch for; a
    source that does not cover the whole tracking window proves nothing unused.
    """

    source: str
    covered_from: datetime | None
    covered_to: datetime | None
    read_at: datetime
    services: dict[str, datetime] = field(default_factory=dict)
    actions: dict[str, datetime] = field(default_factory=dict)
    # Services whose use cannot be judged at all by this source (no coverage).
    blind_services: set[str] = field(default_factory=set)
    # Services seen used through events that map to no single action: their actions cannot
    # be judged one by one, only the service as a whole.
    action_gaps: set[str] = field(default_factory=set)
    action_level: bool = True
    # Services this source reports only as a whole (Access Advisor tracks actions for some).
    service_level_only: set[str] = field(default_factory=set)
    # Every service the source lists for the principal, used or not; None when the source
    # lists only what was used. A granted service missing from the list is a gap in the data.
    listed_services: set[str] | None = None
    # Per service, the lowercase actions whose use this source records one by one, where it
    # records only some (Access Advisor); a service not named here is tracked whole.
    tracked_actions: dict[str, set[str]] = field(default_factory=dict)
    data_events: bool = False
    problems: list[str] = field(default_factory=list)
    # Why the covered time starts where it does (a gap in the logs), for an unknown's reason.
    coverage_note: str | None = None


@dataclass
class FindingDraft:
    """A finding or kept grant as the analysis sees it, before it is stored."""

    principal_arn: str
    kind: FindingKind
    status: FindingStatus
    reason: str
    source: str
    evidence_read_at: datetime
    service: str | None = None
    actions: list[str] | None = None
    resource_id: str | None = None
    last_used_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the key that keeps this finding the same row across scans."""
        if self.kind == "unused_permission":
            # Kept grants of a service are a row of their own beside its unused ones.
            suffix = "" if self.status == "unused" else f":{self.status}"
            return f"{self.kind}:{self.service}{suffix}"
        if self.kind == "unused_access_key":
            return f"{self.kind}:{self.resource_id}"
        return self.kind

    def to_json(self) -> dict[str, Any]:
        """Return the finding as `pare analyze --json` prints it."""
        return {
            "principal_arn": self.principal_arn,
            "kind": self.kind,
            "service": self.service,
            "actions": self.actions,
            "status": self.status,
            "reason": self.reason,
            "last_used": self.last_used_at.date().isoformat() if self.last_used_at else None,
            "source": self.source,
            "resource_id": self.resource_id,
            "evidence_read_at": self.evidence_read_at.isoformat(),
            "detail": self.detail,
        }


@dataclass
class PrincipalAnalysis:
    """The outcome for one principal: its data state and its findings."""

    principal: PrincipalRecord
    data_state: DataState
    data_reason: str | None
    findings: list[FindingDraft]
    granted: dict[str, list[str]] = field(default_factory=dict)
