"""IAM Access Analyzer unused-access findings turned into usage evidence.

An analyzer reports only what is unused: a role, a key, a password, or services and actions
of a principal. Everything it analysed and did not report was used within its unused-access
age. So the evidence for a principal is completed against what the principal is granted
(`AnalyzerEvidence.complete_for`), once the analysis knows that: every granted service the
analyzer did not report counts as used, and inside a reported service every granted action it
did not list counts as used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain import PrincipalRecord, UsageEvidence

log = logging.getLogger(__name__)

SOURCE = "access_analyzer"


@dataclass
class Analyzer:
    """The unused-access analyzer that speaks for an account."""

    arn: str
    type: str
    unused_access_age: int
    analyzed_at: datetime | None = None
    excluded_accounts: frozenset[str] = frozenset()
    excluded_tags: tuple[dict[str, str], ...] = ()

    def covers(self, principal: PrincipalRecord) -> bool:
        """Return whether the analyzer judges this principal at all (not excluded, not newer)."""
        if principal.account_id in self.excluded_accounts:
            return False
        for rule in self.excluded_tags:
            if rule and all(principal.tags.get(k) == v for k, v in rule.items()):
                return False
        if self.analyzed_at and principal.created_at and principal.created_at > self.analyzed_at:
            # Created after the analyzer's last run: its silence says nothing yet.
            return False
        return True


@dataclass
class AnalyzerEvidence(UsageEvidence):
    """What an unused-access analyzer says of one principal."""

    analyzer_arn: str = ""
    role_unused: bool = False
    role_last_used: datetime | None = None
    unused_keys: dict[str, datetime | None] = field(default_factory=dict)
    password_unused: bool = False
    password_last_used: datetime | None = None
    # Service prefix -> (last accessed, unused actions, or None when the whole service is).
    unused_services: dict[str, tuple[datetime | None, list[str] | None]] = field(
        default_factory=dict
    )
    # Finding type -> finding id, so the removal step can find it again.
    finding_ids: dict[str, str] = field(default_factory=dict)
    recommendation: dict[str, Any] | None = None
    completed: bool = False

    def complete_for(self, granted: dict[str, list[str]]) -> None:
        """Fill what was used from what is granted and what the analyzer reported unused."""
        if self.completed:
            return
        self.completed = True
        # The analyzer vouches only that use happened within its age, not when: its last
        # analysis is the latest moment it can stand for.
        marker = self.covered_to or self.read_at
        for service, actions in granted.items():
            reported = self.unused_services.get(service)
            if reported is None:
                self.services[service] = marker
                self.service_level_only.add(service)
                continue
            last, unused = reported
            if unused is None:
                if last is not None:
                    self.services[service] = last
                continue
            self.services[service] = marker
            listed = {a.lower() for a in unused}
            for action in actions:
                if action.lower() not in listed:
                    self.actions[action.lower()] = marker

    def permission_detail(self) -> dict[str, Any]:
        """Return what the removal step needs to act on the analyzer's finding."""
        detail: dict[str, Any] = {"analyzer_arn": self.analyzer_arn}
        if "UnusedPermission" in self.finding_ids:
            detail["finding_id"] = self.finding_ids["UnusedPermission"]
        if self.recommendation is not None:
            detail["recommendation"] = self.recommendation
        return detail


def recommended_policies(recommendation: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Return the analyzer's recommended documents, keyed by the policy each one replaces.

    Only a finished recommendation counts; a step whose document is not valid JSON is left
    out, so removal falls back to trimming the policy itself.
    """
    if not recommendation or recommendation.get("status") != "SUCCEEDED":
        return {}
    out: dict[str, dict[str, Any]] = {}
    for step in recommendation.get("recommendedSteps") or []:
        item = step.get("unusedPermissionsRecommendedStep") or {}
        text = item.get("recommendedPolicy")
        if item.get("recommendedAction") != "CREATE_POLICY" or not text:
            continue
        try:
            document = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            log.warning("recommended policy is not JSON: policy=%s", item.get("existingPolicyId"))
            continue
        if isinstance(document, dict) and item.get("existingPolicyId"):
            out[str(item["existingPolicyId"])] = document
    return out


def _time(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _action_name(namespace: str, action: str) -> str:
    return action if ":" in action else f"{namespace}:{action}"


def _add_finding(evidence: AnalyzerEvidence, finding: dict[str, Any]) -> None:
    kind = finding.get("findingType", "")
    evidence.finding_ids[kind] = finding.get("id", "")
    for entry in finding.get("findingDetails") or []:
        if "unusedIamRoleDetails" in entry:
            evidence.role_unused = True
            evidence.role_last_used = _time(entry["unusedIamRoleDetails"].get("lastAccessed"))
        elif "unusedIamUserAccessKeyDetails" in entry:
            key = entry["unusedIamUserAccessKeyDetails"]
            evidence.unused_keys[key["accessKeyId"]] = _time(key.get("lastAccessed"))
        elif "unusedIamUserPasswordDetails" in entry:
            evidence.password_unused = True
            evidence.password_last_used = _time(
                entry["unusedIamUserPasswordDetails"].get("lastAccessed")
            )
        elif "unusedPermissionDetails" in entry:
            item = entry["unusedPermissionDetails"]
            namespace = str(item["serviceNamespace"]).lower()
            actions = [
                _action_name(namespace, a["action"]) for a in item.get("actions") or []
            ] or None
            evidence.unused_services[namespace] = (_time(item.get("lastAccessed")), actions)
    if kind == "UnusedPermission" and "recommendation" in finding:
        evidence.recommendation = finding["recommendation"]


def from_findings(
    analyzer: Analyzer,
    findings: Iterable[dict[str, Any]],
    principals: Iterable[PrincipalRecord],
    *,
    read_at: datetime,
    problems: Iterable[str] = (),
    principal_problems: dict[str, list[str]] | None = None,
) -> dict[str, list[UsageEvidence]]:
    """Return the analyzer's evidence for each principal it judges (GetFindingV2 responses).

    The analyzer speaks for the `unused_access_age` days up to its last analysis. A principal
    it excludes, or one created since it last ran, gets no evidence from it.
    """
    analyzed = analyzer.analyzed_at or read_at
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for finding in findings:
        by_resource.setdefault(finding.get("resource", ""), []).append(finding)
    shared = list(problems)
    own = principal_problems or {}
    out: dict[str, list[UsageEvidence]] = {}
    for principal in principals:
        if not analyzer.covers(principal):
            out[principal.arn] = []
            continue
        evidence = AnalyzerEvidence(
            source=SOURCE,
            covered_from=analyzed - timedelta(days=analyzer.unused_access_age),
            covered_to=analyzed,
            read_at=read_at,
            action_level=True,
            # Its verdicts rest on IAM's last-accessed records, which see every authenticated
            # request to a service, data events included; and what it does not list counts
            # as used, so no data-event action can be called unused by its silence.
            data_events=True,
            analyzer_arn=analyzer.arn,
            problems=shared + list(own.get(principal.arn, [])),
        )
        for finding in by_resource.get(principal.arn, []):
            _add_finding(evidence, finding)
        out[principal.arn] = [evidence]
    return out
