"""The scan job: read each account, judge what is unused, and keep findings up to date.

Each account is scanned and stored on its own, so one unreadable account is reported while the
others are still scanned. A re-scan updates findings in place; a finding closes only when the
principal's data is complete (used again) or the principal is gone, never on partial data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.db import Database
from bot.domain import FindingDraft, PrincipalAnalysis, PrincipalRecord, UsageEvidence
from bot.errors import PareError
from bot.settings import Settings
from bot.sync import sync_config
from bot.teams import Account as AccountSpec
from bot.teams import TeamsConfig
from models import Account, Finding, Principal, Scan, Team

log = logging.getLogger(__name__)

# Only these changes of a finding are its own; the rest is who decided what, kept as is.
FINDING_FIELDS = (
    "kind",
    "status",
    "service",
    "actions",
    "resource_id",
    "reason",
    "source",
    "evidence_read_at",
    "last_used_at",
    "detail",
)


@dataclass
class AccountResult:
    """What one account's scan did, for the report."""

    account_id: str
    label: str
    ok: bool = False
    error: str | None = None
    principals: int = 0
    states: dict[str, int] = field(default_factory=dict)
    open_findings: int = 0
    new_findings: int = 0
    closed_findings: int = 0
    gone: int = 0
    unowned: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    trail: str | None = None

    def stats(self) -> dict[str, Any]:
        """Return the figures stored on the Scan row."""
        return {
            "principals": self.principals,
            "states": self.states,
            "open_findings": self.open_findings,
            "new_findings": self.new_findings,
            "closed_findings": self.closed_findings,
            "gone": self.gone,
            "unowned": len(self.unowned),
            "problems": len(self.problems),
            "trail": self.trail,
        }


@dataclass
class ScanReport:
    """The outcome of one scan run over the configured accounts."""

    accounts: list[AccountResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every account was read."""
        return all(a.ok for a in self.accounts)

    def summary(self) -> str:
        """Return a few readable lines: per account, principals, findings, problems."""
        lines = []
        for a in self.accounts:
            if not a.ok:
                lines.append(f"{a.label}: not scanned: {a.error}")
                continue
            lines.append(
                f"{a.label}: {a.principals} principals read; findings {a.open_findings} open, "
                f"{a.new_findings} new, {a.closed_findings} closed"
                + (f"; {a.gone} principals gone" if a.gone else "")
            )
            if a.trail:
                lines.append(f"  evidence: {a.trail}")
            not_complete = {k: v for k, v in sorted(a.states.items()) if k != "complete"}
            if not_complete:
                lines.append(
                    "  not judged in full: "
                    + ", ".join(f"{n} {state}" for state, n in not_complete.items())
                )
            if a.unowned:
                shown = ", ".join(a.unowned[:10]) + (" ..." if len(a.unowned) > 10 else "")
                lines.append(f"  {len(a.unowned)} unowned principals: {shown}")
            for problem in a.problems[:5]:
                lines.append(f"  problem: {problem}")
            if len(a.problems) > 5:
                lines.append(f"  ... and {len(a.problems) - 5} more problems")
        if not self.accounts:
            lines.append("no accounts configured to scan")
        return "\n".join(lines)


@dataclass
class AccountRead:
    """What was read from one account: its principals, and the evidence for them."""

    principals: list[PrincipalRecord]
    evidence: dict[str, list[UsageEvidence]]
    problems: list[str] = field(default_factory=list)
    trail: str | None = None


Reader = Callable[[AccountSpec, datetime, int], AccountRead]


def read_from_aws(spec: AccountSpec, as_of: datetime, window_days: int) -> AccountRead:
    """Read an account's principals and CloudTrail evidence through boto3."""
    from bot.aws.cloudtrail_s3 import read_trail
    from bot.aws.inventory import read_account
    from bot.aws.session import open_account

    session = open_account(spec)
    inventory = read_account(session)
    arns = [p.arn for p in inventory.principals]
    evidence: dict[str, list[UsageEvidence]] = {arn: [] for arn in arns}
    trail = None
    if "cloudtrail" in spec.sources and spec.cloudtrail is not None:
        # A day before the window is read too: the coverage must start at or before the
        # window, and a quiet account may log nothing for hours around its start.
        since = as_of - timedelta(days=window_days + 1)
        readout = read_trail(session, since=since, until=as_of)
        # Read in the scan that judges as of `as_of`: to that judgement the data is fresh,
        # also when an operator replays or projects a date with --as-of.
        evidence = readout.evidence_for(arns, read_at=as_of)
        trail = readout.summary()
    return AccountRead(inventory.principals, evidence, inventory.problems, trail)


def _team_ids(session: Session) -> dict[str, int]:
    return {t.name: t.id for t in session.scalars(select(Team))}


def _apply(finding: Finding, draft: FindingDraft) -> None:
    for name in FINDING_FIELDS:
        setattr(finding, name, getattr(draft, name))


def _store_findings(
    session: Session,
    principal: Principal,
    analysis: PrincipalAnalysis,
    now: datetime,
    result: AccountResult,
) -> None:
    existing = {
        f.key: f
        for f in session.scalars(select(Finding).where(Finding.principal_id == principal.id))
    }
    produced: set[str] = set()
    for draft in analysis.findings:
        key = draft.key
        if key in produced:
            # Two drafts with one key would be one row; the first (the analysis's order) wins.
            continue
        produced.add(key)
        finding = existing.get(key)
        if finding is None:
            finding = Finding(principal_id=principal.id, key=key, first_seen_at=now)
            session.add(finding)
            if draft.status == "unused":
                result.new_findings += 1
        elif finding.closed_at is not None:
            # Unused again after it closed: a new round, so it is decided afresh.
            finding.closed_at = None
            finding.closed_reason = None
            finding.round += 1
            if draft.status == "unused":
                result.new_findings += 1
        _apply(finding, draft)
        finding.last_seen_at = now
        if draft.status == "unused":
            result.open_findings += 1
    if analysis.data_state != "complete":
        # Partial data proves nothing used: what was open stays open.
        return
    for key, finding in existing.items():
        if key not in produced and finding.closed_at is None:
            finding.closed_at = now
            finding.closed_reason = "used_again"
            if finding.status == "unused":
                result.closed_findings += 1


def _close_gone(
    session: Session, account: Account, seen: set[str], now: datetime, result: AccountResult
) -> None:
    query = select(Principal).where(Principal.account_id == account.id, Principal.gone_at.is_(None))
    for principal in session.scalars(query):
        if principal.arn in seen:
            continue
        principal.gone_at = now
        result.gone += 1
        log.info("principal gone: account=%s principal=%s", account.account_id, principal.arn)
        for finding in principal.findings:
            if finding.closed_at is None:
                finding.closed_at = now
                finding.closed_reason = "principal_gone"
                if finding.status == "unused":
                    result.closed_findings += 1


def store_account(
    session: Session,
    account: Account,
    analyses: Iterable[PrincipalAnalysis],
    teams: TeamsConfig,
    now: datetime,
    result: AccountResult,
) -> None:
    """Upsert the account's principals and their findings; close what is used or gone."""
    team_ids = _team_ids(session)
    known = {
        p.arn: p
        for p in session.scalars(select(Principal).where(Principal.account_id == account.id))
    }
    seen: set[str] = set()
    for analysis in analyses:
        record = analysis.principal
        seen.add(record.arn)
        principal = known.get(record.arn)
        if principal is None:
            principal = Principal(account_id=account.id, arn=record.arn, first_seen_at=now)
            session.add(principal)
        principal.kind = record.kind
        principal.name = record.name
        principal.path = record.path
        principal.tags = dict(record.tags)
        principal.created_at = record.created_at
        principal.last_used_at = record.last_used_at
        principal.data_state = analysis.data_state
        principal.data_reason = analysis.data_reason
        principal.granted = {k: sorted(v) for k, v in analysis.granted.items()}
        principal.last_seen_at = now
        principal.gone_at = None
        owner = teams.owner_of(record.account_id, record.name, record.tags)
        principal.team_id = team_ids.get(owner) if owner else None
        if principal.team_id is None and analysis.data_state != "excluded":
            result.unowned.append(record.name)
        session.flush()
        _store_findings(session, principal, analysis, now, result)
        result.states[analysis.data_state] = result.states.get(analysis.data_state, 0) + 1
    result.principals = len(seen)
    _close_gone(session, account, seen, now, result)


def _scan_account(
    db: Database,
    settings: Settings,
    spec: AccountSpec,
    as_of: datetime,
    reader: Reader,
) -> AccountResult:
    from bot.analysis import analyze

    result = AccountResult(account_id=spec.id, label=spec.label)
    with db.session() as session:
        account = session.scalars(select(Account).where(Account.account_id == spec.id)).one()
        scan = Scan(account_id=account.id, started_at=datetime.now(UTC), status="running")
        session.add(scan)
        session.flush()
        scan_id, account_pk = scan.id, account.id
    try:
        read = reader(spec, as_of, settings.window_days)
        exclusions = settings.teams.exclusions
        if spec.role_arn:
            # Pare's own reader role is the operator's to size, not a team's to trim.
            allow = (*exclusions.allow_list, spec.role_arn)
            exclusions = exclusions.model_copy(update={"allow_list": allow})
        analyses = analyze(
            read.principals,
            read.evidence,
            as_of=as_of,
            window_days=settings.window_days,
            exclusions=exclusions,
        )
        result.problems.extend(read.problems)
        result.trail = read.trail
        with db.session() as session:
            account = session.get_one(Account, account_pk)
            store_account(session, account, analyses, settings.teams, datetime.now(UTC), result)
        result.ok = True
    except PareError as exc:
        result.error = str(exc)
    except Exception as exc:
        # One account's failure must not stop the others; the traceback goes to the log.
        log.exception("scan failed: account=%s", spec.id)
        result.error = f"unexpected error ({type(exc).__name__})"
    finished = datetime.now(UTC)
    with db.session() as session:
        account = session.get_one(Account, account_pk)
        scan = session.get_one(Scan, scan_id)
        account.last_scan_at = finished
        account.last_scan_status = "ok" if result.ok else "failed"
        account.last_scan_error = result.error
        scan.finished_at = finished
        scan.status = "ok" if result.ok else "failed"
        scan.error = result.error
        scan.stats = result.stats()
    log.info(
        "scanned account: account=%s ok=%s principals=%d open=%d new=%d closed=%d",
        spec.id,
        result.ok,
        result.principals,
        result.open_findings,
        result.new_findings,
        result.closed_findings,
    )
    return result


def run_scan(
    settings: Settings,
    as_of: datetime | None = None,
    accounts: Iterable[str] | None = None,
    *,
    reader: Reader | None = None,
) -> ScanReport:
    """Scan the configured accounts (or only those given) and store what was found."""
    as_of = as_of or datetime.now(UTC)
    teams = settings.teams
    wanted = set(accounts) if accounts else None
    if wanted:
        unknown = wanted - {a.id for a in teams.accounts}
        if unknown:
            raise PareError(f"not in the teams file's accounts: {', '.join(sorted(unknown))}")
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            sync_config(session, teams)
        report = ScanReport()
        for spec in teams.accounts:
            if wanted and spec.id not in wanted:
                continue
            report.accounts.append(
                _scan_account(db, settings, spec, as_of, reader or read_from_aws)
            )
        return report
    finally:
        db.engine.dispose()
