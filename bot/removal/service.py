"""Turn approved decisions into changes, undo them, and tell a principal's history.

`apply_approved` is the job the scheduler and `pare apply` call: it resumes unfinished changes,
re-reads each account's evidence just before acting (the scan's own reader and analysis), drops
anything used since, plans and records every change (dry run unless the account applies or the
caller commits), and deletes deactivated keys and quarantined roles after their grace period.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.aws.iam_write import IamWriteError, IamWriter, validation_errors
from bot.catalog import catalogue
from bot.db import Database
from bot.domain import PrincipalAnalysis
from bot.errors import FindingNotFound, NotAChampion, PareError
from bot.removal import engine
from bot.removal import plan as planner
from bot.removal import policy as P
from bot.removal.plan import Plan, Step
from bot.settings import Settings
from bot.teams import Account as AccountSpec
from bot.teams import account_id as valid_account_id
from models import Account, Change, ChangeStep, Decision, Finding, Principal

log = logging.getLogger(__name__)

# Deactivated keys and quarantined roles wait this long before deletion, so a workload that
# breaks can be noticed and undone while undo is still complete.
GRACE_DAYS = 14
FOLLOW_UPS = {"deactivate_access_key": "delete_access_key", "quarantine_role": "delete_role"}
KIND_OF_FINDING = {
    "unused_permission": "trim_permissions",
    "unused_access_key": "deactivate_access_key",
    "unused_password": "delete_login_profile",
    "unused_role": "quarantine_role",
}
PASSWORD_NOTE = (
    "the console password was recreated with a random password that must be reset at the next "
    "sign-in; an administrator has to set one for the user"
)

# Steps that write a new policy document, which Access Analyzer checks first where it exists.
NEW_DOCUMENTS = ("put_inline", "create_policy", "create_version")
# Removed actions a report line names before it counts the rest.
SHOWN = 12

IamClients = Callable[[AccountSpec], Any]
Reader = Callable[[AccountSpec, datetime, int], Any]


@dataclass
class ChangeResult:
    """One change as the command line, the scheduler and Slack report it."""

    change_id: int
    kind: str
    mode: str
    status: str
    principal: str
    account: str
    removed: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    reason: str | None = None
    parent_id: int | None = None

    def line(self) -> str:
        """Return one readable line, then the steps and what was kept."""
        verb = "would" if self.mode == "dry_run" else "did"
        head = f"change {self.change_id} [{self.status}] {self.kind} {self.principal}"
        lines = [head]
        if self.removed:
            more = len(self.removed) - SHOWN
            tail = f" and {more} more" if more > 0 else ""
            label = "restores" if self.kind == "undo" else "removes"
            lines.append(f"  {label}: {', '.join(self.removed[:SHOWN])}{tail}")
        for step in self.steps:
            lines.append(f"  {verb}: {step}")
        for kept in self.kept:
            lines.append(f"  kept {kept['what']}: {kept['why']}")
        if self.reason and self.status not in ("dropped",):
            lines.append(f"  reason: {self.reason}")
        return "\n".join(lines)


@dataclass
class ApplyReport:
    """What one apply run did."""

    results: list[ChangeResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Return the report as readable text."""
        lines = [r.line() for r in self.results]
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines) or "nothing approved is waiting to be applied"


def describe(op: str, params: dict[str, Any]) -> str:
    """Return a step as a short sentence (ids and names only, never a document)."""
    target = params.get("principal") or params.get("name") or ""
    what = params.get("policy") or params.get("arn") or params.get("key") or params.get("version")
    return f"{op} {target} {what or ''}".strip()


def _result(session: Session, change: Change) -> ChangeResult:
    principal = change.principal
    rows = session.scalars(
        select(ChangeStep).where(ChangeStep.change_id == change.id).order_by(ChangeStep.number)
    )
    return ChangeResult(
        change_id=change.id,
        kind=change.kind,
        mode=change.mode,
        status=change.status,
        principal=principal.arn,
        account=principal.account.account_id,
        removed=[catalogue().canonical(a) or a for a in change.removed],
        kept=list(change.kept),
        steps=[describe(r.op, r.params) for r in rows],
        reason=change.reason,
        parent_id=change.parent_id,
    )


def result_of(db: Database, change_id: int) -> ChangeResult:
    """Return a stored change as a ChangeResult."""
    with db.session() as session:
        return _result(session, session.get_one(Change, change_id))


def _default_clients(spec: AccountSpec) -> Any:
    from bot.aws.session import open_account

    return open_account(spec).client("iam")


def _default_analyzers(spec: AccountSpec) -> Any:
    from bot.aws.session import open_account

    return open_account(spec).client("accessanalyzer")


def _default_reader(spec: AccountSpec, as_of: datetime, window_days: int) -> Any:
    from bot.scan import read_from_aws

    return read_from_aws(spec, as_of, window_days)


def recheck(
    settings: Settings, spec: AccountSpec, as_of: datetime, reader: Reader
) -> dict[str, PrincipalAnalysis]:
    """Read the account's evidence again and judge every principal, as the scan does."""
    from bot.analysis import analyze

    read = reader(spec, as_of, settings.window_days)
    exclusions = settings.teams.exclusions
    if spec.role_arn:
        exclusions = exclusions.model_copy(
            update={"allow_list": (*exclusions.allow_list, spec.role_arn)}
        )
    analyses = analyze(
        read.principals,
        read.evidence,
        as_of=as_of,
        window_days=settings.window_days,
        exclusions=exclusions,
    )
    return {a.principal.arn: a for a in analyses}


def _still_unused(analysis: PrincipalAnalysis | None, frozen: dict[str, Any]) -> set[str]:
    """Return what the fresh analysis still calls unused of what the frozen set names."""
    if analysis is None or analysis.data_state != "complete":
        return set()
    kind = frozen.get("kind")
    out: set[str] = set()
    for f in analysis.findings:
        if f.status != "unused" or f.kind != kind:
            continue
        if kind == "unused_permission" and f.service == frozen.get("service"):
            names = f.actions or analysis.granted.get(f.service or "", [])
            out |= {a.lower() for a in names}
        elif kind == "unused_access_key" and f.resource_id == frozen.get("resource_id"):
            out.add(f.resource_id or "")
        elif kind in ("unused_password", "unused_role"):
            out.add(kind)
    return out


def _approved_set(frozen: dict[str, Any], analysis: PrincipalAnalysis | None) -> set[str]:
    if frozen.get("kind") != "unused_permission":
        return {frozen.get("resource_id") or frozen.get("kind") or ""}
    actions = frozen.get("actions") or frozen.get("granted_actions") or []
    if actions:
        return {a.lower() for a in actions}
    # A whole service was approved: what of it the principal is granted now, nothing newer
    # (a grant attached since is too new to be judged unused, so the re-check keeps it).
    granted = analysis.granted.get(frozen.get("service") or "", []) if analysis else []
    return {a.lower() for a in granted}


class _Run:
    """One apply run over the configured accounts."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        commit: bool,
        now: datetime,
        as_of: datetime,
        reader: Reader,
        clients: IamClients,
        grace: timedelta,
        analyzers: IamClients | None,
    ):
        self.settings = settings
        self.db = db
        self.commit = commit
        self.now = now
        self.as_of = as_of
        self.reader = reader
        self.clients = clients
        self.grace = grace
        self.analyzers = analyzers or _default_analyzers
        self.report = ApplyReport()
        self.cat = catalogue()
        self.writers: dict[str, IamWriter] = {}

    def spec(self, account_id: str) -> AccountSpec | None:
        return self.settings.teams.account(account_id)

    def writer(self, spec: AccountSpec) -> IamWriter:
        if spec.id not in self.writers:
            self.writers[spec.id] = IamWriter(self.clients(spec), spec.id)
        return self.writers[spec.id]

    def validate(self, spec: AccountSpec, plan: Plan) -> None:
        """Refuse the plan if Access Analyzer (where the account has it) rejects a new document."""
        if "access_analyzer" not in spec.sources or plan.refused:
            return
        analyzer = self.analyzers(spec)
        for step in plan.steps:
            if step.op not in NEW_DOCUMENTS:
                continue
            errors = validation_errors(analyzer, step.params["doc"])
            if errors:
                target = (
                    step.params.get("policy") or step.params.get("name") or step.params.get("arn")
                )
                plan.refused = f"Access Analyzer rejects the new {target}: {'; '.join(errors[:3])}"
                return

    def commits(self, spec: AccountSpec) -> bool:
        return self.commit or spec.apply

    def add(self, change_id: int) -> None:
        self.report.results.append(result_of(self.db, change_id))

    # -- resuming --------------------------------------------------------------------------

    def resume(self) -> None:
        with self.db.session() as session:
            rows = session.execute(
                select(Change.id, Account.account_id)
                .join(Change.principal)
                .join(Principal.account)
                .where(Change.status.in_(engine.UNFINISHED), Change.mode == "commit")
                .order_by(Change.id)
            ).all()
        for change_id, account_id in rows:
            spec = self.spec(account_id)
            if spec is None:
                self.report.problems.append(
                    f"change {change_id}: account {account_id} not configured"
                )
                continue
            log.info("resuming change: change=%s account=%s", change_id, account_id)
            self._guarded(
                change_id, lambda c=change_id, s=spec: engine.run(self.db, self.writer(s), c)
            )

    def _guarded(self, change_id: int | None, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except IamWriteError as exc:
            self.report.problems.append(str(exc))
        except PareError as exc:
            self.report.problems.append(str(exc))
        except Exception as exc:
            # One change's crash must not stop the rest; it stays resumable for the next run.
            log.exception("change interrupted: change=%s", change_id)
            self.report.problems.append(f"change {change_id}: interrupted ({type(exc).__name__})")
        if change_id is not None:
            self.add(change_id)

    # -- planning from decisions -----------------------------------------------------------

    def pending(self) -> dict[str, list[int]]:
        """Return approved decisions with no real change yet, by account id."""
        done = select(Change.decision_id).where(
            Change.mode == "commit", Change.parent_id.is_(None), Change.decision_id.is_not(None)
        )
        with self.db.session() as session:
            rows = session.execute(
                select(Decision.id, Account.account_id)
                .join(Decision.finding)
                .join(Finding.principal)
                .join(Principal.account)
                .where(
                    Decision.kind == "approve",
                    Decision.id.not_in(done),
                    # An approval belongs to its round: a finding that closed and came back
                    # is decided afresh, not removed on the strength of the old click.
                    Decision.round == Finding.round,
                )
                .order_by(Decision.id)
            ).all()
        out: dict[str, list[int]] = defaultdict(list)
        for decision_id, account_id in rows:
            out[account_id].append(decision_id)
        return out

    def apply_account(self, spec: AccountSpec, decision_ids: list[int]) -> None:
        try:
            fresh = recheck(self.settings, spec, self.as_of, self.reader)
        except PareError as exc:
            self.report.problems.append(
                f"{spec.label}: evidence not re-read, nothing applied: {exc}"
            )
            return
        except Exception as exc:
            # One account's failure must not stop the others; the traceback goes to the log.
            log.exception("re-check failed: account=%s", spec.id)
            self.report.problems.append(
                f"{spec.label}: evidence not re-read ({type(exc).__name__})"
            )
            return
        for decision_id in decision_ids:
            self.apply_decision(spec, decision_id, fresh)

    def _agreement(
        self, spec: AccountSpec, fresh: dict[str, PrincipalAnalysis]
    ) -> planner.Agreement:
        def agree(arn: str, hit: set[str]) -> bool:
            state = self.writer(spec).policy_state(arn)
            if state["attached_to"]["groups"]:
                return False
            with self.db.session() as session:
                for kind, names in (
                    ("role", state["attached_to"]["roles"]),
                    ("user", state["attached_to"]["users"]),
                ):
                    for name in names:
                        principal = session.scalar(
                            select(Principal)
                            .join(Principal.account)
                            .where(
                                Account.account_id == spec.id,
                                Principal.kind == kind,
                                Principal.name == name,
                                Principal.gone_at.is_(None),
                            )
                        )
                        if principal is None:
                            return False
                        analysis = fresh.get(principal.arn)
                        agreed: set[str] = set()
                        for decision in session.scalars(
                            select(Decision)
                            .join(Decision.finding)
                            .where(Finding.principal_id == principal.id, Decision.kind == "approve")
                        ):
                            agreed |= _approved_set(decision.frozen, analysis) & _still_unused(
                                analysis, decision.frozen
                            )
                        if not hit <= agreed:
                            return False
            return True

        return agree

    def apply_decision(
        self, spec: AccountSpec, decision_id: int, fresh: dict[str, PrincipalAnalysis]
    ) -> None:
        dry = not self.commits(spec)
        with self.db.session() as session:
            decision = session.get_one(Decision, decision_id)
            finding = decision.finding
            principal = finding.principal
            frozen = dict(decision.frozen) or {"kind": finding.kind}
            frozen.setdefault("kind", finding.kind)
            frozen.setdefault("service", finding.service)
            frozen.setdefault("resource_id", finding.resource_id)
            recommended = dict(finding.detail.get("recommended_policies") or {})
            ids = (decision.id, finding.id, principal.id)
            arn, pkind, pname = principal.arn, principal.kind, principal.name
            if dry and session.scalar(
                select(Change.id).where(Change.decision_id == decision.id, Change.mode == "dry_run")
            ):
                # Already recorded as a dry run; the scheduler's next runs need not repeat it.
                existing = session.scalar(
                    select(Change)
                    .where(Change.decision_id == decision.id, Change.mode == "dry_run")
                    .order_by(Change.id.desc())
                )
                self.report.results.append(_result(session, existing))
                return
        kind = KIND_OF_FINDING.get(frozen["kind"])
        if kind is None:
            self.report.problems.append(
                f"decision {decision_id}: nothing to apply for {frozen['kind']}"
            )
            return
        change = Change(
            decision_id=ids[0],
            finding_id=ids[1],
            principal_id=ids[2],
            kind=kind,
            mode="dry_run" if dry else "commit",
        )
        analysis = fresh.get(arn)
        approved = _approved_set(frozen, analysis)
        unused = _still_unused(analysis, frozen)
        plan = Plan()
        state = None
        if analysis is None:
            plan.keep(pname, "the principal no longer exists")
        else:
            try:
                state = self.writer(spec).read_state(pkind, pname)
            except IamWriteError as exc:
                plan.refused = str(exc)
        if state is not None:
            if frozen["kind"] == "unused_permission":
                remove = approved & unused
                for action in sorted(approved - unused):
                    why = (
                        "used since the decision, or no longer provably unused"
                        if analysis is not None and analysis.data_state == "complete"
                        else f"the evidence is incomplete now ({analysis.data_reason})"
                        if analysis
                        else "not re-read"
                    )
                    plan.keep(self.cat.canonical(action) or action, why)
                if remove:
                    found = planner.plan_trim(
                        state,
                        remove,
                        self.cat,
                        decision_id,
                        self._agreement(spec, fresh),
                        recommended,
                    )
                    found.kept = plan.kept + found.kept
                    plan = found
            elif not (approved & unused):
                plan.keep(frozen.get("resource_id") or frozen["kind"], "used since the decision")
            elif frozen["kind"] == "unused_access_key":
                plan = planner.plan_key(state, frozen["resource_id"])
            elif frozen["kind"] == "unused_password":
                plan = planner.plan_password(state)
            else:
                plan = planner.plan_quarantine(state, self.now)
        self.validate(spec, plan)
        change_id = engine.record_plan(self.db, change, plan, state, dry)
        if dry:
            self.add(change_id)
            return
        self._guarded(change_id, lambda: engine.run(self.db, self.writer(spec), change_id))

    # -- grace periods ---------------------------------------------------------------------

    def follow_ups(self, fresh_by_account: dict[str, dict[str, PrincipalAnalysis]]) -> None:
        cutoff = self.now - self.grace
        with self.db.session() as session:
            rows = session.execute(
                select(Change.id, Change.kind, Account.account_id)
                .join(Change.principal)
                .join(Principal.account)
                .where(
                    Change.kind.in_(list(FOLLOW_UPS)),
                    Change.status == "applied",
                    Change.mode == "commit",
                    Change.finished_at <= cutoff,
                )
                .order_by(Change.id)
            ).all()
            children = set(
                session.scalars(select(Change.parent_id).where(Change.parent_id.is_not(None)))
            )
        for change_id, kind, account_id in rows:
            spec = self.spec(account_id)
            if change_id in children or spec is None or not self.commits(spec):
                continue
            self._follow_up(spec, change_id, FOLLOW_UPS[kind], fresh_by_account)

    def _follow_up(
        self,
        spec: AccountSpec,
        parent_id: int,
        kind: str,
        fresh_by_account: dict[str, dict[str, PrincipalAnalysis]],
    ) -> None:
        with self.db.session() as session:
            parent = session.get_one(Change, parent_id)
            principal = parent.principal
            pkind, pname, arn = principal.kind, principal.name, principal.arn
            key = parent.removed[0] if parent.removed else ""
            change = Change(
                decision_id=parent.decision_id,
                finding_id=parent.finding_id,
                principal_id=parent.principal_id,
                parent_id=parent.id,
                kind=kind,
                mode="commit",
            )
        plan = Plan()
        state = None
        try:
            state = self.writer(spec).read_state(pkind, pname)
        except IamWriteError as exc:
            plan.keep(pname, f"not readable now ({exc.code})")
        if state is not None and kind == "delete_access_key":
            plan = planner.plan_key_deletion(state, key)
        elif state is not None:
            if spec.id not in fresh_by_account:
                try:
                    fresh_by_account[spec.id] = recheck(
                        self.settings, spec, self.as_of, self.reader
                    )
                except PareError as exc:
                    self.report.problems.append(f"{spec.label}: role deletion waits: {exc}")
                    return
            analysis = fresh_by_account[spec.id].get(arn)
            if "unused_role" not in _still_unused(analysis, {"kind": "unused_role"}):
                plan.keep(pname, "the role is no longer provably unused")
            else:
                plan = planner.plan_role_deletion(state)
        change_id = engine.record_plan(self.db, change, plan, state, dry_run=False)
        self._guarded(change_id, lambda: engine.run(self.db, self.writer(spec), change_id))


def _configured(settings: Settings, account_id: str) -> None:
    """Raise PareError unless account_id is a well-formed account id in the teams file."""
    try:
        valid_account_id(account_id)
    except ValueError as exc:
        raise PareError(f"--account: {exc}") from None
    if settings.teams.account(account_id) is None:
        raise PareError(f"--account: account {account_id} is not configured in the teams file")


def apply_approved(
    settings: Settings,
    db: Database,
    *,
    commit: bool = False,
    now: datetime | None = None,
    as_of: datetime | None = None,
    accounts: list[str] | None = None,
    reader: Reader | None = None,
    iam_clients: IamClients | None = None,
    analyzers: IamClients | None = None,
    slack: Any | None = None,
    grace_days: int = GRACE_DAYS,
) -> ApplyReport:
    """Apply every approved decision not yet applied (dry run unless committing); resume and
    finish earlier changes; post each real outcome in its digest's thread."""
    for asked in accounts or []:
        _configured(settings, asked)
    now = now or datetime.now(UTC)
    run = _Run(
        settings,
        db,
        commit,
        now,
        as_of or now,
        reader or _default_reader,
        iam_clients or _default_clients,
        timedelta(days=grace_days),
        analyzers,
    )
    run.resume()
    fresh_by_account: dict[str, dict[str, PrincipalAnalysis]] = {}
    for account_id, decision_ids in sorted(run.pending().items()):
        if accounts and account_id not in accounts:
            continue
        spec = run.spec(account_id)
        if spec is None:
            run.report.problems.append(f"account {account_id} is not in the teams file")
            continue
        run.apply_account(spec, decision_ids)
    run.follow_ups(fresh_by_account)
    _post_outcomes(settings, db, run.report, slack)
    return run.report


def _post_outcomes(settings: Settings, db: Database, report: ApplyReport, slack: Any) -> None:
    from bot.removal.messages import post_outcome

    if slack is None and settings.slack_bot_token is None:
        return
    if slack is None:
        from bot.slack.client import make_client

        slack = make_client(settings)
    for result in report.results:
        if result.mode == "commit" and result.status in engine.FINAL:
            post_outcome(db, slack, result.change_id)


# -- undo ------------------------------------------------------------------------------------

# Row ids are PostgreSQL INTEGERs; a larger number names no change (and SQLite's driver
# overflows on it rather than finding nothing).
MAX_ROW_ID = 2**31 - 1
COPY_GONE = "the trimmed copy was deleted outside Pare"
POLICY_GONE = "the policy was deleted outside Pare, so nothing can be restored in it"


class UndoClaimed(PareError):
    """The change is being undone, or was undone already (by whom and when is named)."""


@dataclass
class _Undos:
    """What earlier undos of one change did, read in the transaction that reads the change."""

    seen: int
    running: Change | None = None
    everything: Change | None = None
    restored: dict[str, Change] = field(default_factory=dict)
    applied: list[int] = field(default_factory=list)


def _earlier_undos(session: Session, target: Change) -> _Undos:
    # target was read first: an undo recorded after that read moves undo_seq past `seen`,
    # so the claim fails rather than two undos planning from the same picture.
    undos = _Undos(seen=target.undo_seq)
    children = session.scalars(
        select(Change)
        .where(Change.parent_id == target.id, Change.kind == "undo")
        .order_by(Change.id)
    )
    for child in children:
        if child.status in engine.UNFINISHED:
            undos.running = child
        elif child.status == "applied":
            undos.applied.append(child.id)
            if not child.only:
                undos.everything = child
            # An applied partial undo left every action it was asked for granted.
            for action in child.only or target.removed:
                undos.restored[action.lower()] = child
    return undos


def _by(undo: Change) -> str:
    when = undo.created_at.isoformat(timespec="seconds")
    return f"change {undo.id}, asked by {undo.requested_by or 'an unnamed caller'} at {when}"


def _claimed_message(db: Database, target_id: int) -> str:
    """Say who undid (or is undoing) a change, after losing the race to claim it."""
    with db.session() as session:
        latest = session.scalar(
            select(Change)
            .where(Change.parent_id == target_id, Change.kind == "undo")
            .order_by(Change.id.desc())
        )
        if latest is None:
            return f"change {target_id} is being undone by another request; try again"
        if latest.status in engine.UNFINISHED:
            return f"change {target_id} is already being undone by {_by(latest)}"
        return f"change {target_id} was just undone by {_by(latest)} [{latest.status}]"


def _claim(target_id: int, seen: int) -> Callable[[Session], None]:
    """Return a claim that takes the change's next undo number, or raises if it is gone."""

    def claim(session: Session) -> None:
        # One conditional UPDATE: PostgreSQL makes a concurrent one wait for this transaction
        # and then re-checks its WHERE; SQLite lets one writer in at a time. Either way only
        # the first of two undos that read the same undo_seq matches a row.
        taken = session.execute(
            update(Change)
            .where(Change.id == target_id, Change.undo_seq == seen)
            .values(undo_seq=seen + 1)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            raise UndoClaimed(f"change {target_id}")

    return claim


def _done_steps(db: Database, change_id: int) -> list[ChangeStep]:
    with db.session() as session:
        return list(
            session.scalars(
                select(ChangeStep)
                .where(ChangeStep.change_id == change_id, ChangeStep.status == "done")
                .order_by(ChangeStep.number)
            )
        )


def _restore_plan(
    db: Database,
    writer: IamWriter,
    change: Change,
    current: dict[str, Any],
    restore: set[str],
    undo_tag: int,
    earlier: list[int],
    whole: bool,
) -> Plan:
    """Plan re-granting actions a trim removed, as the before-state granted them.

    earlier are the applied undos of the change: what they wrote is Pare's own, so a later
    undo that restores the rest may put the original documents back exactly.
    """
    cat = catalogue()
    plan = Plan()
    before = change.before_state or {}
    who = {"kind": current["kind"], "principal": current["name"]}
    steps = _done_steps(db, change.id)
    since = [s for undo_id in earlier for s in _done_steps(db, undo_id)]
    copies = {
        s.params["copy_of"]: s.params["arn"] for s in steps + since if s.params.get("copy_of")
    }
    for row in steps:
        p = row.params
        if row.op in ("put_inline", "delete_inline") and p.get("previous") is not None:
            old = p["previous"]
            cur = current["inline"].get(p["policy"])
            missing = P.grants(old, cat) - P.grants(cur, cat)
            wanted = restore & missing
            if not wanted:
                continue
            ours = [p.get("doc")] + [
                s.params["doc"]
                for s in since
                if s.op == "put_inline" and s.params["policy"] == p["policy"]
            ]
            exact = wanted == missing and any(P.canonical_equal(cur, d) for d in ours)
            doc = old if exact else P.with_statements(cur, P.restore_statements(old, wanted, cat))
            plan.steps.append(
                Step("put_inline", {**who, "policy": p["policy"], "doc": doc, "previous": cur})
            )
            plan.removed += sorted(wanted)
        elif row.op == "create_version":
            arn = p["arn"]
            old = next(
                v["doc"] for v in before["managed"][arn]["versions"] if v["id"] == p["previous"]
            )
            state = writer.find_policy(arn)
            if state is None:
                plan.keep(before["managed"][arn]["name"], POLICY_GONE)
                continue
            cur_version = next(v for v in state["versions"] if v["default"])
            missing = P.grants(old, cat) - P.grants(cur_version["doc"], cat)
            wanted = restore & missing
            if not wanted:
                continue
            ids = {v["id"] for v in state["versions"]}
            ours = {row.result.get("version")} | {
                s.result.get("version")
                for s in since
                if s.op == "create_version" and s.params["arn"] == arn
            }
            if wanted == missing and cur_version["id"] in ours and p["previous"] in ids:
                plan.steps.append(
                    Step(
                        "set_default",
                        {"arn": arn, "version": p["previous"], "previous": cur_version["id"]},
                    )
                )
            else:
                doc = P.with_statements(cur_version["doc"], P.restore_statements(old, wanted, cat))
                plan.steps += planner._version_room(arn, state)
                plan.steps.append(
                    Step("create_version", {"arn": arn, "doc": doc, "previous": cur_version["id"]})
                )
            plan.removed += sorted(wanted)
        elif row.op == "detach":
            arn = p["arn"]
            original = before["managed"][arn]["name"]
            old = next(v["doc"] for v in before["managed"][arn]["versions"] if v["default"])
            copy = copies.get(arn)
            cur = None
            gone = False
            if copy:
                state = writer.find_policy(copy)
                if state is None:
                    gone, copy = True, None
                else:
                    cur_version = next(v for v in state["versions"] if v["default"])
                    cur = cur_version["doc"]
            missing = P.grants(old, cat) - P.grants(cur, cat)
            wanted = restore & missing
            if gone:
                why = f"{COPY_GONE}; {original} is attached again"
                if not whole:
                    why = f"{COPY_GONE}; what it kept is not restored: undo the whole change"
                plan.keep(copies[arn], why)
            if not wanted:
                continue
            plan.removed += sorted(wanted)
            # A whole undo puts the original back even when the copy lost more than the trim
            # took (deleted or edited outside Pare): the before-state is what was asked for.
            if wanted == missing or whole:
                plan.steps.append(Step("attach", {**who, "arn": arn}))
                if copy:
                    plan.steps += [
                        Step("detach", {**who, "arn": copy}),
                        Step("delete_policy", {"arn": copy}),
                    ]
            elif copy:
                doc = P.with_statements(cur, P.restore_statements(old, wanted, cat))
                plan.steps += planner._version_room(copy, state)
                plan.steps.append(
                    Step("create_version", {"arn": copy, "doc": doc, "previous": cur_version["id"]})
                )
            else:
                name = planner.copy_name(original, undo_tag)
                doc = P.with_statements(None, P.restore_statements(old, wanted, cat))
                copy_arn = f"arn:aws:iam::{current['account_id']}:policy{planner.COPY_PATH}{name}"
                plan.steps += [
                    Step("create_policy", {"name": name, "path": planner.COPY_PATH, "doc": doc}),
                    # copy_of lets a later undo find this copy and finish the job in it.
                    Step("attach", {**who, "arn": copy_arn, "copy_of": arn}),
                ]
    return plan


def _change_id(db: Database, value: int | str) -> int:
    """Return the id of a stored change, or raise FindingNotFound naming what was given."""
    try:
        change_id = int(value)
    except (TypeError, ValueError):
        raise FindingNotFound(f"no change {value!r}") from None
    if not 0 < change_id <= MAX_ROW_ID:
        raise FindingNotFound(f"no change {change_id}")
    with db.session() as session:
        if session.get(Change, change_id) is None:
            raise FindingNotFound(f"no change {change_id}")
    return change_id


def _left_to_restore(
    target_id: int, removed: list[str], undos: _Undos, wanted: set[str], plan: Plan
) -> set[str]:
    """Return what this undo is to restore, or raise UndoClaimed if nothing is left."""
    if undos.running is not None:
        raise UndoClaimed(f"change {target_id} is already being undone by {_by(undos.running)}")
    if undos.everything is not None:
        raise UndoClaimed(f"change {target_id} was already undone by {_by(undos.everything)}")
    names = {a.lower(): a for a in removed}
    left = set(names) - set(undos.restored)
    if not left:
        last = max(undos.restored.values(), key=lambda c: c.id)
        raise UndoClaimed(
            f"change {target_id} was already undone, in parts; the last by {_by(last)}"
        )
    if not wanted:
        return left
    for action in sorted(wanted - left):
        plan.keep(names[action], f"already restored by {_by(undos.restored[action])}")
    if not wanted & left:
        raise UndoClaimed(
            f"change {target_id}: " + "; ".join(f"{k['what']} was {k['why']}" for k in plan.kept)
        )
    return wanted & left


def undo_change(
    settings: Settings,
    db: Database,
    change_id: int | str,
    *,
    only: list[str] | None = None,
    user: str | None = None,
    iam_clients: IamClients | None = None,
    slack: Any | None = None,
) -> ChangeResult:
    """Restore a change's before-state, whole or only some actions; the undo is a change too.

    Partial undos compose: each restores what is still removed, and the change is undone
    when all of it is restored. Only one undo of a change runs at a time.
    """
    target_id = _change_id(db, change_id)
    with db.session() as session:
        target = session.get_one(Change, target_id)
        if target.kind == "undo":
            raise PareError(f"change {target_id} is itself an undo; it cannot be undone")
        if target.mode != "commit":
            raise PareError(
                f"change {target_id} was a dry run: nothing changed in AWS, so nothing to undo"
            )
        if target.status != "applied":
            raise PareError(
                f"change {target_id} is {target.status}, not applied: only an applied change "
                "can be undone"
            )
        undos = _earlier_undos(session, target)
        principal = target.principal
        account_id = principal.account.account_id
        pkind, pname = principal.kind, principal.name
        removed = list(target.removed)
    wanted = {a.lower() for a in only or []}
    if wanted and target.kind != "trim_permissions":
        raise PareError("--only names actions; it applies to removed permissions only")
    unknown = wanted - {a.lower() for a in removed}
    if unknown:
        raise PareError(f"change {target_id} did not remove: {', '.join(sorted(unknown))}")
    spec = settings.teams.account(account_id)
    if spec is None:
        raise PareError(f"account {account_id} is not in the teams file")
    notes = Plan()
    if target.kind == "trim_permissions":
        restore = _left_to_restore(target_id, removed, undos, wanted, notes)
    elif undos.running is not None or undos.applied:
        _left_to_restore(target_id, removed, undos, set(), notes)

    writer = IamWriter((iam_clients or _default_clients)(spec), spec.id)
    undo = Change(
        principal_id=target.principal_id,
        decision_id=target.decision_id,
        finding_id=target.finding_id,
        parent_id=target_id,
        kind="undo",
        mode="commit",
        only=sorted(wanted),
        requested_by=user,
    )
    current = None
    try:
        current = writer.read_state(pkind, pname) if target.kind != "delete_role" else None
        if target.kind == "trim_permissions":
            whole = not wanted
            plan = _restore_plan(
                db, writer, target, current or {}, restore, target_id, undos.applied, whole
            )
        else:
            plan = _reverse_plan(db, target)
    except IamWriteError as exc:
        # Recorded, not raised: the undo's outcome and its reason stay in the history.
        plan = Plan(refused=str(exc))
    plan.kept = notes.kept + plan.kept
    try:
        change_id_new = engine.record_plan(
            db, undo, plan, current, dry_run=False, claim=_claim(target_id, undos.seen)
        )
    except UndoClaimed:
        log.info("undo lost the claim: change=%s user=%s", target_id, user)
        raise UndoClaimed(_claimed_message(db, target_id)) from None
    log.info("undo requested: change=%s undo=%s user=%s", target_id, change_id_new, user)
    try:
        engine.run(db, writer, change_id_new)
        if not wanted:
            _reopen_finding(db, change_id_new)
    finally:
        result = result_of(db, change_id_new)
        if slack is not None or settings.slack_bot_token is not None:
            _post_outcomes(settings, db, ApplyReport([result]), slack)
    return result


def _reopen_finding(db: Database, undo_id: int) -> None:
    """After a whole undo, open the finding again in a new round, to be decided afresh."""
    with db.session() as session:
        undo = session.get_one(Change, undo_id)
        if undo.status != "applied" or undo.finding_id is None:
            return
        finding = session.get_one(Finding, undo.finding_id)
        # The approval stays in the history; the new round shows the finding undecided in the
        # next digest and takes it off the leaderboard's resolved count.
        finding.round += 1
        log.info("finding reopened after undo: finding=%s round=%s", finding.id, finding.round)


def _reverse_plan(db: Database, target: Change) -> Plan:
    """Plan reversing every done step of a change that is not a trim, last first."""
    plan = Plan()
    for row in reversed(_done_steps(db, target.id)):
        back = planner.inverse(Step(row.op, row.params), row.result)
        if not back and row.op == "delete_key":
            plan.keep(row.params["key"], "a deleted access key cannot be brought back")
        plan.steps += back
    plan.removed = list(target.removed)
    if target.kind == "delete_login_profile":
        plan.keep("console password", PASSWORD_NOTE)
    return plan


def may_undo(db: Database, change_id: int | str, user: str, admins: tuple[str, ...]) -> None:
    """Raise NotAChampion unless user champions the team of the change's principal."""
    target_id = _change_id(db, change_id)
    with db.session() as session:
        change = session.get_one(Change, target_id)
        team = change.principal.team
        champions = [c.slack_user_id for c in team.champions] if team else []
        name = team.name if team else "(no team)"
    if user not in champions and user not in admins:
        log.warning("undo refused, not a champion: user=%s change=%s", user, target_id)
        raise NotAChampion(user, name, champions)
