"""Decide what is unused: the evidence rules of Pare, as one pure function.

Unused must be proven by a source that covers the whole tracking window; anything that cannot
be proven either way is kept as unknown, and never offered for removal.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.catalog import Catalogue, catalogue, is_permission_only
from bot.domain import (
    DataState,
    FindingDraft,
    Policy,
    PrincipalAnalysis,
    PrincipalRecord,
    UsageEvidence,
)
from bot.evidence.access_analyzer import AnalyzerEvidence, recommended_policies
from bot.teams import Exclusions

log = logging.getLogger(__name__)

# Evidence older than this at the time of judging may miss recent use.
STALE_AFTER = timedelta(days=3)
# CloudTrail delivers files up to about 15 minutes late; a day of slack avoids calling a
# source short of the window's end for that alone.
COVERAGE_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class Grant:
    """One granted action and the newest date from which every policy granting it dates."""

    action: str
    since: datetime | None


def exclusion_reason(principal: PrincipalRecord, exclusions: Exclusions) -> str | None:
    """Return why a principal never reaches a digest, or None if it may."""
    path = principal.path or "/"
    name = principal.name
    if principal.kind == "role":
        if path.startswith("/aws-service-role/") or name.startswith("AWSServiceRoleFor"):
            return "service-linked role, owned by AWS"
        if path.startswith("/aws-reserved/") or name.startswith("AWSReservedSSO_"):
            return "IAM Identity Center role, managed by Identity Center"
    for pattern in exclusions.role_names:
        if fnmatch.fnmatchcase(name, pattern):
            return f"matches the excluded name pattern {pattern}"
    for pattern in exclusions.allow_list:
        if pattern == principal.arn:
            return "on the allow-list"
        if fnmatch.fnmatchcase(principal.arn, pattern) or fnmatch.fnmatchcase(name, pattern):
            return f"on the allow-list ({pattern})"
    if exclusions.exempt_tag and exclusions.exempt_tag in principal.tags:
        return f"carries the exempt tag {exclusions.exempt_tag}"
    return None


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class GrantCache:
    """Each policy document's grants, expanded once however many principals hold it.

    A managed policy is one document shared by every principal it is attached to; at
    thousands of principals, expanding it again for each is most of the analysis's work.
    """

    def __init__(self, cat: Catalogue):
        self.cat = cat
        # Keyed by the document's identity; the document is kept so the id stays its own.
        self._grants: dict[tuple[int, datetime | None], tuple[object, dict[str, Grant]]] = {}
        self._services: dict[int, frozenset[str]] = {}

    def of(self, policy: Policy) -> dict[str, Grant]:
        """Return what one policy grants, keyed by lowercase action."""
        key = (id(policy.document), policy.attached_at)
        found = self._grants.get(key)
        if found is None:
            found = (policy.document, _policy_grants(policy, self.cat))
            self._grants[key] = found
        return found[1]

    def services(self, policy: Policy) -> frozenset[str]:
        """Return the service prefixes one policy grants anything in."""
        key = id(policy.document)
        if key not in self._services:
            self._services[key] = frozenset(k.partition(":")[0] for k in self.of(policy))
        return self._services[key]


def _policy_grants(policy: Policy, cat: Catalogue) -> dict[str, Grant]:
    grants: dict[str, Grant] = {}
    statements = policy.document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for statement in statements:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            actions = cat.expand_not_action(_as_list(statement["NotAction"]))
        else:
            actions = cat.expand_all(_as_list(statement.get("Action")))
        for action in actions:
            grants[action.lower()] = Grant(action, policy.attached_at)
    return grants


def granted_actions(
    policies: Iterable[Policy], cat: Catalogue, cache: GrantCache | None = None
) -> dict[str, Grant]:
    """Return every action the policies' Allow statements grant, keyed by lowercase name.

    Deny statements grant nothing and are never unused; a NotAction Allow grants every
    catalogued action it does not name. Conditions and resources narrow a grant but do not
    remove it, so they are kept out of this question. An action granted by several policies
    dates from the oldest of them.
    """
    cache = cache or GrantCache(cat)
    grants: dict[str, Grant] = {}
    for policy in policies:
        own = cache.of(policy)
        if not grants:
            grants.update(own)
            continue
        since = policy.attached_at
        for key, grant in own.items():
            old = grants.get(key)
            if old is not None and (old.since is None or (since and old.since <= since)):
                continue
            grants[key] = grant
    return grants


def _tracked(sources: list[UsageEvidence], service: str, grant: Grant) -> bool:
    """Say whether any source records the use of this action one by one."""
    action = grant.action.lower()
    return any(
        service not in e.tracked_actions or action in e.tracked_actions[service] for e in sources
    )


def _covers(evidence: UsageEvidence, start: datetime, end: datetime) -> bool:
    if evidence.covered_from is None or evidence.covered_to is None:
        return False
    return evidence.covered_from <= start and evidence.covered_to >= end - COVERAGE_SLACK


def _day(moment: datetime | None) -> str:
    return moment.date().isoformat() if moment else "never"


def _latest(*moments: datetime | None) -> datetime | None:
    return max((m for m in moments if m is not None), default=None)


def policy_detail(policy: Policy) -> dict[str, object]:
    """Return a policy as a finding's detail shows it, with everyone else it grants to."""
    return {
        "name": policy.name,
        "arn": policy.arn,
        "origin": policy.origin,
        "group": policy.group,
        "attached_to": list(policy.attached_to),
    }


class _Judge:
    """The analysis of one principal against one tracking window."""

    def __init__(
        self,
        principal: PrincipalRecord,
        evidence: list[UsageEvidence],
        as_of: datetime,
        window_days: int,
        cat: Catalogue,
        cache: GrantCache | None = None,
    ):
        self.p = principal
        self.as_of = as_of
        self.window_days = window_days
        self.start = as_of - timedelta(days=window_days)
        self.cat = cat
        self.evidence = evidence
        self.covering = [e for e in evidence if _covers(e, self.start, as_of)]
        self.read_at = max((e.read_at for e in evidence), default=as_of)
        self.findings: list[FindingDraft] = []
        # The analyzer's word on roles, keys and passwords counts only where it covers the
        # whole window; otherwise IAM's own last-used dates decide alone.
        self.analyzer = next((e for e in self.covering if isinstance(e, AnalyzerEvidence)), None)
        self.cache = cache or GrantCache(cat)

    def draft(  # type: ignore[no-untyped-def]
        self, kind: str, status: str, reason: str, source: str, **extra
    ) -> FindingDraft:
        finding = FindingDraft(
            principal_arn=self.p.arn,
            kind=kind,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            reason=reason,
            source=source,
            evidence_read_at=extra.pop("read_at", self.read_at),
            **extra,
        )
        self.findings.append(finding)
        return finding

    def older_than_window(self, moment: datetime | None) -> bool:
        return moment is not None and moment <= self.start

    # -- roles, keys and passwords: last-used data from IAM itself --------------------------

    def judge_role(self) -> bool:
        """Judge the role as a whole; return True if the whole role is unused."""
        p = self.p
        aa = self.analyzer
        if aa is not None and aa.role_unused:
            last = _latest(aa.role_last_used, p.last_used_at)
            if last is not None and last > self.start:
                # IAM saw a use the analyzer has not caught up with: keep the role.
                return False
            self.draft(
                "unused_role",
                "unused",
                f"Access Analyzer: not used in the {self.window_days}-day window "
                f"(last used {_day(last)}).",
                aa.source,
                last_used_at=last,
                read_at=aa.read_at,
                detail={
                    "analyzer_arn": aa.analyzer_arn,
                    "finding_id": aa.finding_ids.get("UnusedIAMRole", ""),
                },
            )
            return True
        if not p.last_used_known:
            self.draft("unused_role", "unknown", "Its last use could not be read.", "last_used")
            return False
        if p.last_used_at is not None and p.last_used_at > self.start:
            return False
        reason = (
            f"Not used in the last {self.window_days} days (last used {_day(p.last_used_at)})."
            if p.last_used_at
            else f"Never used since it was created on {_day(p.created_at)}."
        )
        self.draft(
            "unused_role",
            "unused",
            reason,
            "last_used",
            last_used_at=p.last_used_at,
            read_at=self.as_of,
        )
        return True

    def judge_keys(self) -> None:
        for key in self.p.access_keys:
            if key.status != "Active":
                continue
            if not self.older_than_window(key.created_at):
                self.draft(
                    "unused_access_key",
                    "too_new",
                    f"Created on {_day(key.created_at)}, inside the {self.window_days}-day window.",
                    "last_used",
                    resource_id=key.key_id,
                    read_at=self.as_of,
                )
                continue
            source, read_at, last = "last_used", self.as_of, key.last_used_at
            if self.analyzer is not None and key.key_id in self.analyzer.unused_keys:
                source, read_at = self.analyzer.source, self.analyzer.read_at
                last = _latest(last, self.analyzer.unused_keys[key.key_id])
            if last is not None and last > self.start:
                continue
            key = replace(key, last_used_at=last)
            reason = (
                f"Not used in the last {self.window_days} days "
                f"(last used {_day(key.last_used_at)})."
                if key.last_used_at
                else f"Never used since it was created on {_day(key.created_at)}."
            )
            self.draft(
                "unused_access_key",
                "unused",
                reason,
                source,
                resource_id=key.key_id,
                last_used_at=key.last_used_at,
                read_at=read_at,
            )

    def judge_password(self) -> None:
        profile = self.p.login_profile
        if profile is None:
            return
        if not self.older_than_window(profile.created_at):
            self.draft(
                "unused_password",
                "too_new",
                f"Set on {_day(profile.created_at)}, inside the {self.window_days}-day window.",
                "last_used",
                read_at=self.as_of,
            )
            return
        source, read_at, last = "last_used", self.as_of, profile.last_used_at
        if self.analyzer is not None and self.analyzer.password_unused:
            source, read_at = self.analyzer.source, self.analyzer.read_at
            last = _latest(last, self.analyzer.password_last_used)
        if last is not None and last > self.start:
            return
        profile = replace(profile, last_used_at=last)
        reason = (
            f"No console sign-in in the last {self.window_days} days "
            f"(last {_day(profile.last_used_at)})."
            if profile.last_used_at
            else "Never used to sign in to the console."
        )
        self.draft(
            "unused_password",
            "unused",
            reason,
            source,
            last_used_at=profile.last_used_at,
            read_at=read_at,
        )

    # -- permissions: services and actions -------------------------------------------------

    def judge_permissions(self, grants: dict[str, Grant]) -> None:
        by_service: dict[str, list[Grant]] = defaultdict(list)
        for grant in grants.values():
            by_service[grant.action.partition(":")[0].lower()].append(grant)

        sources = ", ".join(sorted({e.source for e in self.evidence})) or "none"
        for service in sorted(by_service):
            service_grants = sorted(by_service[service], key=lambda g: g.action.lower())
            if not self.covering:
                if self.evidence:
                    reason = (
                        f"The evidence ({sources}) does not cover the whole "
                        f"{self.window_days}-day window."
                    )
                    notes = sorted({e.coverage_note for e in self.evidence if e.coverage_note})
                    if notes:
                        reason = reason[:-1] + ": " + "; ".join(notes) + "."
                else:
                    reason = "No evidence source says whether it was used."
                self._kept(service, service_grants, "unknown", reason, sources)
                continue
            self.judge_service(service, service_grants)

    def _kept(
        self,
        service: str,
        grants: list[Grant],
        status: str,
        reason: str,
        source: str,
        last_used: datetime | None = None,
    ) -> None:
        self.draft(
            "unused_permission",
            status,
            reason,
            source,
            service=service,
            actions=[g.action for g in grants],
            last_used_at=last_used,
        )

    def judge_service(self, service: str, grants: list[Grant]) -> None:
        covering = self.covering
        blind = [e for e in covering if service in e.blind_services]
        if len(blind) == len(covering):
            names = ", ".join(e.source for e in blind)
            self._kept(service, grants, "unknown", f"{names} cannot see this service.", names)
            return
        sources = [e for e in covering if service not in e.blind_services]
        source_name = "+".join(sorted({e.source for e in sources}))

        # Use seen by any source counts, even one that cannot vouch for the whole window:
        # coverage is needed to prove absence, never to believe a use.
        service_last = max(
            (e.services[service] for e in self.evidence if service in e.services), default=None
        )
        used_in_window = service_last is not None and service_last > self.start

        too_new: list[Grant] = []
        unseeable: list[Grant] = []
        judgeable: list[Grant] = []
        for grant in grants:
            if grant.since is not None and grant.since > self.start:
                too_new.append(grant)
            elif is_permission_only(grant.action):
                unseeable.append(grant)
            elif self.cat.is_data_event(grant.action) and not any(e.data_events for e in sources):
                unseeable.append(grant)
            else:
                judgeable.append(grant)

        # Action-level evidence wins where it exists; a service seen used only through events
        # that name no single action, or only by service-level sources, keeps every action.
        action_sources = [
            e
            for e in sources
            if e.action_level
            and service not in e.action_gaps
            and service not in e.service_level_only
        ]
        gap = any(
            service in e.action_gaps and e.services.get(service, self.start) > self.start
            for e in self.evidence
        )
        untracked: list[Grant] = []
        if used_in_window and not gap and action_sources:
            # Access Advisor records only some actions of a service one by one; an action no
            # source records may have been used without a trace, so it is not judged alone.
            untracked = [g for g in judgeable if not _tracked(action_sources, service, g)]
            judgeable = [g for g in judgeable if _tracked(action_sources, service, g)]

        if too_new:
            self._kept(
                service,
                too_new,
                "too_new",
                f"Granted by a policy attached within the last {self.window_days} days.",
                source_name,
            )
        if unseeable or untracked:
            reasons = []
            if unseeable:
                reasons.append(
                    "No log or last-accessed record can show these used "
                    "(permission-only actions, or data events the trail does not log)."
                )
            if untracked:
                reasons.append(
                    f"{source_name} does not record the use of "
                    f"{len(untracked)} of them one by one, and {service} was used."
                )
            self._kept(
                service,
                sorted(unseeable + untracked, key=lambda g: g.action.lower()),
                "unknown",
                " ".join(reasons),
                source_name,
            )
        if not judgeable:
            return

        if not used_in_window:
            whole = not too_new and not unseeable
            last = f" (last used {_day(service_last)})" if service_last else ""
            days = self.window_days
            reason = f"No use of {service} in the {days} days {source_name} covers{last}."
            kept = len(too_new) + len(unseeable)
            if kept:
                # Say why the offer is smaller than the grant, so the two counts agree.
                reason += (
                    f" {len(judgeable)} of its {len(grants)} granted actions are offered; "
                    f"{kept} {'is' if kept == 1 else 'are'} kept, as no record could show "
                    "them used or they are too new."
                )
            self.draft(
                "unused_permission",
                "unused",
                reason,
                source_name,
                service=service,
                actions=None if whole else [g.action for g in judgeable],
                last_used_at=service_last,
                detail=self.permission_detail(
                    service, None if whole else judgeable, sources, {"granted_actions": len(grants)}
                ),
            )
            return

        if gap or not action_sources:
            return
        used = {
            action
            for e in self.evidence
            for action, seen in e.actions.items()
            if seen > self.start and action.partition(":")[0] == service
        }
        if not used:
            # Only a service-level source saw it used: the sources disagree, so keep it all.
            return
        unused = [g for g in judgeable if g.action.lower() not in used]
        if not unused:
            return
        self.draft(
            "unused_permission",
            "unused",
            f"{len(unused)} of the {len(grants)} granted {service} actions were not used in "
            f"the {self.window_days} days {source_name} covers.",
            source_name,
            service=service,
            actions=[g.action for g in unused],
            last_used_at=None,
            detail=self.permission_detail(
                service,
                unused,
                sources,
                {"granted_actions": len(grants), "used_actions": len(used)},
            ),
        )

    def permission_detail(
        self,
        service: str,
        grants: list[Grant] | None,
        sources: list[UsageEvidence],
        detail: dict[str, object],
    ) -> dict[str, object]:
        """Return a finding's detail: the policies granting it, with their blast radius."""
        wanted = {g.action.lower() for g in grants} if grants is not None else None
        policies = []
        for policy in self.p.policies:
            if wanted is not None:
                hit = not wanted.isdisjoint(self.cache.of(policy))
            else:
                hit = service in self.cache.services(policy)
            if hit:
                policies.append(policy_detail(policy))
        detail["policies"] = policies
        # A shared policy's change reaches every principal it is attached to.
        detail["blast_radius"] = sorted({p for d in policies for p in d["attached_to"]})
        for evidence in sources:
            if isinstance(evidence, AnalyzerEvidence):
                detail["access_analyzer"] = evidence.permission_detail()
                recommended = recommended_policies(evidence.recommendation)
                if recommended:
                    # Removal uses these documents instead of trimming the policies itself.
                    detail["recommended_policies"] = recommended
        return detail


def _whole_principal(principal: PrincipalRecord) -> str:
    return "unused_role" if principal.kind == "role" else "unused_permission"


def analyze_principal(
    principal: PrincipalRecord,
    evidence: list[UsageEvidence],
    *,
    as_of: datetime,
    window_days: int,
    exclusions: Exclusions,
    cat: Catalogue | None = None,
    cache: GrantCache | None = None,
) -> PrincipalAnalysis:
    """Judge one principal: its data state, and a finding or kept grant for each thing."""
    cat = cat or catalogue()
    cache = cache or GrantCache(cat)
    grants = granted_actions(principal.policies, cat, cache)
    granted = defaultdict(list)
    for grant in grants.values():
        granted[grant.action.partition(":")[0].lower()].append(grant.action)
    for item in evidence:
        if isinstance(item, AnalyzerEvidence):
            # The analyzer lists only what is unused; what it does not list depends on grants.
            item.complete_for(granted)
    judge = _Judge(principal, evidence, as_of, window_days, cat, cache)

    def outcome(state: DataState, reason: str | None) -> PrincipalAnalysis:
        return PrincipalAnalysis(principal, state, reason, judge.findings, dict(granted))

    excluded = exclusion_reason(principal, exclusions)
    if excluded:
        judge.draft(
            _whole_principal(principal),
            "excluded",
            excluded[0].upper() + excluded[1:] + ".",
            "config",
        )
        return outcome("excluded", excluded)

    if not judge.older_than_window(principal.created_at):
        reason = (
            f"Created on {_day(principal.created_at)}, inside the {window_days}-day window: "
            "too new to judge."
        )
        judge.draft(_whole_principal(principal), "too_new", reason, "last_used", read_at=as_of)
        return outcome("too_new", reason)

    if principal.read_problems:
        reason = "Its data could not be read completely: " + "; ".join(principal.read_problems)
        judge.draft(_whole_principal(principal), "unknown", reason, "last_used", read_at=as_of)
        return outcome("unreadable", reason)

    problems = [f"{e.source}: {p}" for e in evidence for p in e.problems]
    for e in evidence:
        if e.listed_services is None:
            continue
        missing = sorted(set(granted) - e.listed_services)
        if missing:
            shown = ", ".join(missing[:5]) + (" and more" if len(missing) > 5 else "")
            problems.append(f"{e.source}: granted services missing from its list: {shown}")
    stale = [e for e in judge.covering if as_of - e.read_at > STALE_AFTER]

    role_unused = principal.kind == "role" and judge.judge_role()
    if principal.kind == "user":
        judge.judge_keys()
        judge.judge_password()
    if not role_unused:
        # An unused role is offered whole; listing each of its services too would only
        # repeat the same removal.
        judge.judge_permissions(grants)

    state: DataState = "complete"
    reason = None
    if problems:
        state, reason = "incomplete", "; ".join(problems)
    elif stale:
        state = "stale"
        reason = f"The evidence was read on {_day(min(e.read_at for e in stale))}."
    if state != "complete":
        # Fail closed: nothing is offered for removal from a principal whose data is partial.
        for finding in judge.findings:
            if finding.status == "unused":
                finding.status = "unknown"
                finding.reason = f"Kept, as its data is incomplete ({reason}). {finding.reason}"
    return outcome(state, reason)


def analyze(
    principals: list[PrincipalRecord],
    evidence: dict[str, list[UsageEvidence]],
    *,
    as_of: datetime,
    window_days: int,
    exclusions: Exclusions,
) -> list[PrincipalAnalysis]:
    """Judge every principal against the evidence for it (keyed by principal ARN)."""
    cat = catalogue()
    cache = GrantCache(cat)
    results = []
    for principal in principals:
        results.append(
            analyze_principal(
                principal,
                evidence.get(principal.arn, []),
                as_of=as_of,
                window_days=window_days,
                exclusions=exclusions,
                cat=cat,
                cache=cache,
            )
        )
    return results
