"""The scan job: read each account, judge what is unused, and keep findings up to date.

Each account is scanned and stored on its own, so one unreadable account is reported while the
others are still scanned. A re-scan updates findings in place; a finding closes only when the
principal's data is complete (used again) or the principal is gone, never on partial data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.db import Database
from bot.domain import FindingDraft, PrincipalAnalysis, PrincipalRecord, UsageEvidence
from bot.errors import PareError
from bot.settings import Settings
from bot.sync import sync_config
from bot.teams import Account as AccountSpec
from bot.teams import Exclusions, Organization, TeamsConfig
from models import Account, Finding, Principal, Scan, Team

if TYPE_CHECKING:
    from bot.aws.access_analyzer import OrganizationRead

log = logging.getLogger(__name__)

# Accounts read at once. Each account has its own IAM quota, so reading several at a time is
# safe; the bound keeps the process's threads, connections and memory in check.
DEFAULT_CONCURRENCY = 4
# A resumed scan looks this far back for the accounts already done in its period.
RESUME_LOOKBACK = timedelta(days=2)

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
    # Already scanned in this period by an earlier, interrupted run: skipped on --resume.
    resumed: bool = False
    seconds: float = 0.0

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
    # Problems of the run as a whole, such as an organisation that could not be listed.
    problems: list[str] = field(default_factory=list)
    # What the organisation's analyzer in the delegated administrator said, if it was read.
    analyzer: str | None = None

    @property
    def ok(self) -> bool:
        """True when every account was read."""
        return not self.problems and all(a.ok for a in self.accounts)

    def summary(self) -> str:
        """Return a few readable lines: per account, principals, findings, problems."""
        lines = [f"problem: {problem}" for problem in self.problems]
        if self.analyzer:
            lines.append(self.analyzer)
        for a in self.accounts:
            if a.resumed:
                lines.append(f"{a.label}: already scanned in this period; skipped (--resume)")
                continue
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
                noun = "principal" if len(a.unowned) == 1 else "principals"
                lines.append(f"  {len(a.unowned)} unowned {noun}: {shown}")
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


def _worth_a_job(principal: PrincipalRecord, as_of: datetime, window_days: int) -> bool:
    """Say whether a principal could get a verdict, so a last-accessed job is worth its calls."""
    from bot.analysis import exclusion_reason

    # AWS-owned roles are always excluded and principals younger than the window are too new:
    # a job for them would spend two calls or more on an answer nobody reads.
    if exclusion_reason(principal, Exclusions(role_names=(), exempt_tag="")):
        return False
    created = principal.created_at
    return created is None or created <= as_of - timedelta(days=window_days)


def read_from_aws(
    spec: AccountSpec,
    as_of: datetime,
    window_days: int,
    organization: OrganizationRead | None = None,
) -> AccountRead:
    """Read an account's principals and the evidence its configured sources give.

    `organization` is the organisation analyzer's list, read once for the whole scan; it
    speaks for this account only when the account has no unused-access analyzer of its own.
    """
    from bot.aws.access_advisor import read_last_accessed
    from bot.aws.access_analyzer import read_unused_access
    from bot.aws.cloudtrail_s3 import read_trail
    from bot.aws.inventory import read_account
    from bot.aws.session import open_account
    from bot.evidence.access_analyzer import from_findings

    session = open_account(spec)
    inventory = read_account(session, credential_report="last_used" in spec.sources)
    principals = inventory.principals
    arns = [p.arn for p in principals]
    evidence: dict[str, list[UsageEvidence]] = {arn: [] for arn in arns}
    problems = list(inventory.problems)
    said: list[str] = []
    if inventory.report_at:
        said.append(f"credential report of {inventory.report_at:%Y-%m-%d %H:%M} UTC")

    analyzer_spoke = False
    if "access_analyzer" in spec.sources:
        found = read_unused_access(session)
        if found.analyzer is None and not found.problems and organization is not None:
            found = organization.share(spec.id)
        problems.extend(found.problems)
        if found.analyzer is not None:
            analyzer_spoke = not found.problems
            from_analyzer = from_findings(
                found.analyzer,
                found.findings,
                principals,
                read_at=as_of,
                problems=found.problems,
                principal_problems=found.principal_problems,
            )
            for arn, items in from_analyzer.items():
                evidence[arn].extend(items)
            said.append(f"Access Analyzer: {len(found.findings)} findings ({found.speaker()})")
        else:
            said.append("no unused-access analyzer")

    if "access_advisor" in spec.sources and not analyzer_spoke:
        # The analyzer is preferred: it is built on the same last-accessed data and already
        # covers every principal, where Access Advisor costs two calls or more per principal.
        wanted = [p for p in principals if _worth_a_job(p, as_of, window_days)]
        advisor = read_last_accessed(session, wanted)
        for arn, item in advisor.evidence.items():
            evidence[arn].append(item)
        said.append(f"Access Advisor: {len(advisor.evidence)} principals")

    if "cloudtrail" in spec.sources and spec.cloudtrail is not None:
        # A day before the window is read too: the coverage must start at or before the
        # window, and a quiet account may log nothing for hours around its start.
        since = as_of - timedelta(days=window_days + 1)
        readout = read_trail(session, since=since, until=as_of)
        # Read in the scan that judges as of `as_of`: to that judgement the data is fresh,
        # also when an operator replays or projects a date with --as-of.
        for arn, items in readout.evidence_for(arns, read_at=as_of).items():
            evidence[arn].extend(items)
        said.append(readout.summary())
    return AccountRead(principals, evidence, problems, "; ".join(said) or None)


def organization_analyzer_from_aws(org: Organization, accounts: list[str]) -> OrganizationRead:
    """List the delegated administrator's organisation analyzer findings for the accounts."""
    from bot.aws.access_analyzer import read_organization_unused_access
    from bot.aws.session import open_account

    admin = org.analyzer_admin()
    assert admin is not None
    return read_organization_unused_access(
        open_account(admin), accounts, analyzer_arn=org.analyzer_arn
    )


def _organization_reader(
    org: Organization,
    members: set[str],
    todo: list[AccountSpec],
    read: Callable[[Organization, list[str]], OrganizationRead],
    report: ScanReport,
) -> Reader:
    """Read the organisation analyzer once and return a reader that hands out its shares."""
    from bot.aws.access_analyzer import OrganizationRead

    admin = org.analyzer_admin()
    assert admin is not None
    shared = sorted(s.id for s in todo if s.id in members and "access_analyzer" in s.sources)
    if not shared:
        return read_from_aws
    try:
        listed = read(org, shared)
    except PareError as exc:
        # Not even reachable: every member that would lean on it fails closed below.
        listed = OrganizationRead(admin.id, None, problems=[f"not readable: {exc}"])
    if listed.problems:
        report.problems.extend(f"organisation analyzer: {p}" for p in listed.problems)
    elif listed.analyzer is not None:
        count = sum(len(v) for v in listed.summaries.values())
        report.analyzer = (
            f"organisation analyzer {listed.analyzer.arn} in delegated administrator "
            f"{admin.id}: {count} findings for {len(shared)} accounts"
        )

    def reader(spec: AccountSpec, as_of: datetime, window_days: int) -> AccountRead:
        # Only members of the organisation are judged by it; a listed account outside it
        # would read its silence as "everything used".
        share = listed if spec.id in members else None
        return read_from_aws(spec, as_of, window_days, share)

    return reader


def discover_from_aws(org: Organization) -> list[AccountSpec]:
    """Return the organisation's accounts through the Organizations API."""
    from bot.aws.organizations import discover_accounts

    return discover_accounts(org)


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


@dataclass
class _Judged:
    """What a worker thread hands back: the analyses, or why there are none."""

    analyses: list[PrincipalAnalysis] | None = None
    read: AccountRead | None = None
    error: str | None = None
    seconds: float = 0.0


def _judge_account(
    settings: Settings, spec: AccountSpec, as_of: datetime, reader: Reader
) -> _Judged:
    """Read and judge one account (in a worker thread; it touches no database)."""
    from bot.analysis import analyze

    started = time.monotonic()
    out = _Judged()
    try:
        out.read = reader(spec, as_of, settings.window_days)
        exclusions = settings.teams.exclusions
        if spec.role_arn:
            # Pare's own reader role is the operator's to size, not a team's to trim.
            allow = (*exclusions.allow_list, spec.role_arn)
            exclusions = exclusions.model_copy(update={"allow_list": allow})
        out.analyses = analyze(
            out.read.principals,
            out.read.evidence,
            as_of=as_of,
            window_days=settings.window_days,
            exclusions=exclusions,
        )
    except PareError as exc:
        out.error = str(exc)
    except Exception as exc:
        # One account's failure must not stop the others; the traceback goes to the log.
        log.exception("scan failed: account=%s", spec.id)
        out.error = f"unexpected error ({type(exc).__name__})"
    out.seconds = time.monotonic() - started
    return out


def _begin(db: Database, spec: AccountSpec) -> tuple[int, int]:
    with db.session() as session:
        account = session.scalars(select(Account).where(Account.account_id == spec.id)).one()
        scan = Scan(account_id=account.id, started_at=datetime.now(UTC), status="running")
        session.add(scan)
        session.flush()
        return scan.id, account.id


def _finish(
    db: Database,
    settings: Settings,
    spec: AccountSpec,
    ids: tuple[int, int],
    judged: _Judged,
    period: str,
) -> AccountResult:
    """Store one account's outcome (in the main thread, so database writes stay serial)."""
    scan_id, account_pk = ids
    result = AccountResult(account_id=spec.id, label=spec.label, seconds=judged.seconds)
    result.error = judged.error
    if judged.analyses is not None and judged.read is not None:
        result.problems.extend(judged.read.problems)
        result.trail = judged.read.trail
        try:
            with db.session() as session:
                account = session.get_one(Account, account_pk)
                store_account(
                    session, account, judged.analyses, settings.teams, datetime.now(UTC), result
                )
            result.ok = True
        except Exception as exc:
            log.exception("storing failed: account=%s", spec.id)
            result.error = f"unexpected error while storing ({type(exc).__name__})"
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
        # The period is the resume checkpoint: a rerun with --resume skips what is done.
        scan.stats = {**result.stats(), "period": period}
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


def _done_in_period(db: Database, period: str) -> dict[str, dict[str, Any]]:
    """Return the stats of accounts scanned successfully in this period, by account id."""
    since = datetime.now(UTC) - RESUME_LOOKBACK
    with db.session() as session:
        rows = session.execute(
            select(Account.account_id, Scan.stats)
            .join(Scan, Scan.account_id == Account.id)
            .where(Scan.status == "ok", Scan.finished_at >= since)
        ).all()
    return {
        account_id: stats for account_id, stats in rows if (stats or {}).get("period") == period
    }


def _resumed(spec: AccountSpec, stats: dict[str, Any]) -> AccountResult:
    result = AccountResult(account_id=spec.id, label=spec.label, ok=True, resumed=True)
    result.principals = int(stats.get("principals") or 0)
    result.open_findings = int(stats.get("open_findings") or 0)
    return result


def _progress_line(n: int, total: int, result: AccountResult) -> str:
    head = f"[{n}/{total}] {result.label}:"
    if result.resumed:
        return f"{head} skipped, already scanned in this period"
    if not result.ok:
        return f"{head} failed after {result.seconds:.1f}s: {result.error}"
    return (
        f"{head} {result.principals} principals, {result.open_findings} open findings "
        f"({result.new_findings} new, {result.closed_findings} closed), "
        f"{len(result.problems)} problems, {result.seconds:.1f}s"
    )


def _ensure_accounts(db: Database, specs: Iterable[AccountSpec]) -> None:
    """Give accounts found in the organisation a row, as the teams file's accounts have."""
    with db.session() as session:
        have = set(session.scalars(select(Account.account_id)))
        for spec in specs:
            if spec.id not in have:
                session.add(Account(account_id=spec.id, name=spec.name))


def run_scan(
    settings: Settings,
    as_of: datetime | None = None,
    accounts: Iterable[str] | None = None,
    *,
    reader: Reader | None = None,
    resume: bool = False,
    progress: TextIO | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    discover: Callable[[Organization], list[AccountSpec]] | None = None,
    organization_analyzer: Callable[[Organization, list[str]], OrganizationRead] | None = None,
) -> ScanReport:
    """Scan the configured accounts (or only those given) and store what was found.

    Accounts are read and judged in a bounded pool of threads; their findings are stored
    one account at a time in this thread. With `resume`, accounts already scanned
    successfully for the same day (`as_of`) are skipped. `progress` gets one line per account.
    With an `analyzer_account` in the organisation, its analyzer's findings are listed once,
    before any account is read, and each member account's scan takes its own share.
    """
    as_of = as_of or datetime.now(UTC)
    period = as_of.date().isoformat()
    teams = settings.teams
    report = ScanReport()
    specs = list(teams.accounts)
    found: list[AccountSpec] = []
    members: set[str] = set()
    if teams.organization is not None:
        try:
            listed = {a.id for a in specs}
            discovered = (discover or discover_from_aws)(teams.organization)
            members = {a.id for a in discovered}
            found = [a for a in discovered if a.id not in listed]
            specs += found
        except PareError as exc:
            # The listed accounts are still scanned; the report says what was missed.
            report.problems.append(f"organisation accounts not found: {exc}")
    wanted = set(accounts) if accounts else None
    if wanted:
        unknown = wanted - {a.id for a in specs}
        if unknown:
            raise PareError(f"not in the teams file's accounts: {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.id in wanted]
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            sync_config(session, teams)
        _ensure_accounts(db, found)
        done = _done_in_period(db, period) if resume else {}
        results: dict[str, AccountResult] = {}
        total, n = len(specs), 0
        for spec in specs:
            if spec.id in done:
                results[spec.id] = _resumed(spec, done[spec.id])
                n += 1
                if progress:
                    print(_progress_line(n, total, results[spec.id]), file=progress, flush=True)
        todo = [s for s in specs if s.id not in done]
        org = teams.organization
        if reader is None and org is not None and org.analyzer_account:
            reader = _organization_reader(
                org, members, todo, organization_analyzer or organization_analyzer_from_aws, report
            )
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = {}
            for spec in todo:
                ids = _begin(db, spec)
                future = pool.submit(_judge_account, settings, spec, as_of, reader or read_from_aws)
                futures[future] = (spec, ids)
            for future in as_completed(futures):
                spec, ids = futures[future]
                results[spec.id] = _finish(db, settings, spec, ids, future.result(), period)
                n += 1
                if progress:
                    print(_progress_line(n, total, results[spec.id]), file=progress, flush=True)
        report.accounts = [results[s.id] for s in specs]
        return report
    finally:
        db.engine.dispose()
