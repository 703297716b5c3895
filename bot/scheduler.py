"""The scheduler: team digests at local day and hour, the daily scan, the weekly leaderboard.

Several processes or replicas may run it; one database row (a lease with an expiry and a
fencing counter) decides which one acts. Every job run is a `job_runs` row inserted before the
work starts, so a second runner finds the work done or under way, and a run missed while the
process was down is caught up on the next tick.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.db import Database
from bot.periods import Occurrence, Schedule, last_due, leaderboard_period
from models import JobRun, SchedulerLease, Team

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

DIGEST = "digest"
LEADERBOARD = "leaderboard"
SCAN = "scan"
ESCALATION = "escalation"
APPLY = "apply"
JOBS = (SCAN, DIGEST, LEADERBOARD, ESCALATION, APPLY)
# Digests of different teams post concurrently, this many at once; each channel is still paced
# to Slack's one message a second by the digest's own pacer, which waits holding no database
# connection, so more workers than pooled connections is fine.
DIGEST_WORKERS = 32

LEASE_NAME = "scheduler"
# A leader renews every LEASE_TTL / 3, so two missed renewals still keep it; a crashed leader
# is replaced within LEASE_TTL.
LEASE_TTL = timedelta(seconds=60)
TICK_SECONDS = 30
SCAN_TICK_SECONDS = 300

# The scan runs before most teams' working day starts; the leaderboard on Monday mornings.
SCAN_SCHEDULE = Schedule("UTC", "daily", 5)
LEADERBOARD_SCHEDULE = Schedule("UTC", "monday", 10)
# Escalations once a day, after most teams' digests have gone out.
ESCALATION_SCHEDULE = Schedule("UTC", "daily", 12)
# Approved removals an hour after the scan, so the re-check reads fresh evidence. Accounts
# without `apply: true` only get a dry run recorded.
APPLY_SCHEDULE = Schedule("UTC", "daily", 6)


@dataclass(frozen=True)
class JobPolicy:
    """How far back a job is caught up, and when a stuck or failed run may be retaken."""

    # Only the latest missed occurrence within this window runs: a team gets one late digest
    # after an outage, not one per missed week.
    catch_up: timedelta
    # A run still "running" after this long belongs to a crashed process.
    stale_after: timedelta
    # A failed run (Slack down, channel not found) is tried again after this long.
    retry_after: timedelta


POLICIES = {
    DIGEST: JobPolicy(timedelta(days=7), timedelta(minutes=30), timedelta(minutes=15)),
    LEADERBOARD: JobPolicy(timedelta(days=3), timedelta(minutes=30), timedelta(minutes=15)),
    ESCALATION: JobPolicy(timedelta(days=1), timedelta(minutes=30), timedelta(minutes=15)),
    # A scan of hundreds of accounts legitimately takes hours.
    SCAN: JobPolicy(timedelta(days=1), timedelta(hours=6), timedelta(hours=1)),
    # A half-done change is resumed by the next apply run, so a crashed one is retaken too.
    APPLY: JobPolicy(timedelta(days=1), timedelta(hours=2), timedelta(hours=1)),
}


class LeaseLost(Exception):
    """This process no longer holds the scheduler lease; it must stop starting jobs."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _insert_ignoring_conflict(engine: Engine, table: Any, values: dict[str, Any]) -> Any:
    """Build an INSERT that does nothing when the row exists (SQLite and PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).values(**values).on_conflict_do_nothing()
    raise NotImplementedError(f"the scheduler supports SQLite and PostgreSQL, not {engine.name}")


class Lease:
    """The scheduler's leadership: one row with a holder, an expiry and a fencing counter."""

    def __init__(
        self,
        db: Database,
        holder: str | None = None,
        *,
        name: str = LEASE_NAME,
        ttl: timedelta = LEASE_TTL,
    ):
        self.db = db
        self.name = name
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.fencing: int | None = None
        self.expires_at: datetime | None = None
        self._lock = threading.Lock()

    def held(self, now: datetime) -> bool:
        """Say whether this process believes it holds the lease at `now`."""
        return self.fencing is not None and self.expires_at is not None and self.expires_at > now

    def acquire(self, now: datetime) -> bool:
        """Take the lease if it is free or expired, or renew it if held; return whether held."""
        with self._lock:
            if self.fencing is not None and self._renew(now):
                return True
            self.fencing = None
            expires = now + self.ttl
            with self.db.session() as session:
                # Conditional UPDATE: of several contenders only one matches the expired row.
                fencing = session.scalar(
                    update(SchedulerLease)
                    .where(SchedulerLease.name == self.name, SchedulerLease.expires_at <= now)
                    .values(
                        holder=self.holder,
                        expires_at=expires,
                        fencing=SchedulerLease.fencing + 1,
                    )
                    .returning(SchedulerLease.fencing)
                )
                if fencing is None:
                    values = {"name": self.name, "holder": self.holder, "expires_at": expires}
                    fencing = session.scalar(
                        _insert_ignoring_conflict(
                            self.db.engine, SchedulerLease.__table__, {**values, "fencing": 1}
                        ).returning(SchedulerLease.fencing)
                    )
                if fencing is None:
                    return False
            self.fencing, self.expires_at = fencing, expires
            log.info("scheduler lease taken: holder=%s fencing=%s", self.holder, fencing)
            return True

    def renew(self, now: datetime) -> bool:
        """Extend a held lease; return False (and forget it) if another process took it."""
        with self._lock:
            return self._renew(now)

    def _renew(self, now: datetime) -> bool:
        if self.fencing is None:
            return False
        expires = now + self.ttl
        with self.db.session() as session:
            renewed = session.execute(
                update(SchedulerLease).where(*self._mine(now)).values(expires_at=expires)
            ).rowcount
        if renewed:
            self.expires_at = expires
            return True
        log.warning("scheduler lease lost: holder=%s fencing=%s", self.holder, self.fencing)
        self.fencing = self.expires_at = None
        return False

    def release(self, now: datetime) -> None:
        """Give the lease up so another process can take it at once."""
        with self._lock:
            if self.fencing is None:
                return
            with self.db.session() as session:
                session.execute(
                    update(SchedulerLease)
                    .where(
                        SchedulerLease.name == self.name,
                        SchedulerLease.holder == self.holder,
                        SchedulerLease.fencing == self.fencing,
                    )
                    .values(expires_at=now)
                )
            log.info("scheduler lease released: holder=%s fencing=%s", self.holder, self.fencing)
            self.fencing = self.expires_at = None

    def fence(self, session: Session, now: datetime) -> None:
        """Lock the lease row in session's transaction, or raise LeaseLost if it is not ours."""
        # The no-op UPDATE holds the row until the transaction ends, so a takeover cannot slip
        # between this check and the job claim that follows it.
        if self.fencing is None:
            raise LeaseLost(self.holder)
        still = session.execute(
            update(SchedulerLease).where(*self._mine(now)).values(fencing=SchedulerLease.fencing)
        ).rowcount
        if not still:
            raise LeaseLost(self.holder)

    def _mine(self, now: datetime) -> tuple[Any, ...]:
        return (
            SchedulerLease.name == self.name,
            SchedulerLease.holder == self.holder,
            SchedulerLease.fencing == self.fencing,
            SchedulerLease.expires_at > now,
        )


@dataclass(frozen=True)
class Claim:
    """A job run this process may do now."""

    job: str
    key: str
    started_at: datetime
    retaken: str | None = None  # the earlier run's status when a stale or failed run is retaken


def claim_run(
    db: Database,
    job: str,
    key: str,
    now: datetime,
    *,
    policy: JobPolicy | None = None,
    lease: Lease | None = None,
) -> Claim | None:
    """Claim (job, key) by inserting its run first; None if it is done or under way elsewhere."""
    policy = policy or POLICIES[job]
    with db.session() as session:
        if lease is not None:
            lease.fence(session, now)
        values = {"job": job, "run_key": key, "started_at": now, "status": "running"}
        stmt = _insert_ignoring_conflict(db.engine, JobRun.__table__, values)
        # RETURNING, not rowcount: psycopg reports -1 rows for an INSERT ... ON CONFLICT.
        if session.scalar(stmt.returning(JobRun.id)) is not None:
            return Claim(job, key, now)

        row = (JobRun.job == job, JobRun.run_key == key)
        previous = session.scalar(select(JobRun.status).where(*row))
        retake = (
            (JobRun.status == "running") & (JobRun.started_at <= now - policy.stale_after)
        ) | ((JobRun.status == "failed") & (JobRun.started_at <= now - policy.retry_after))
        retaken = session.execute(
            update(JobRun)
            .where(*row, retake)
            .values(started_at=now, status="running", finished_at=None, error=None)
        ).rowcount
        if not retaken:
            return None
    log.warning("job run retaken: job=%s key=%s was=%s", job, key, previous)
    return Claim(job, key, now, retaken=previous)


def finish_run(db: Database, claim: Claim, status: str, now: datetime, error: str = "") -> bool:
    """Record how a claimed run ended; False if another process retook it meanwhile."""
    with db.session() as session:
        done = session.execute(
            update(JobRun)
            .where(
                JobRun.job == claim.job,
                JobRun.run_key == claim.key,
                JobRun.status == "running",
                JobRun.started_at == claim.started_at,
            )
            .values(status=status, finished_at=now, error=error[:1000] or None)
        ).rowcount
    if not done:
        log.warning("job run was retaken before it finished: job=%s key=%s", claim.job, claim.key)
    return bool(done)


@dataclass(frozen=True)
class Ran:
    """One job run a tick did, and how it ended (done, partial or failed)."""

    job: str
    key: str
    status: str
    error: str | None = None


@dataclass(frozen=True)
class _Due:
    job: str
    key: str
    occurrence: Occurrence
    call: Callable[[], Any]


def _due_jobs(
    settings: Any,
    db: Database,
    now: datetime,
    only: Iterable[str],
    *,
    deliver_digest: Callable[..., Any],
    post_leaderboard: Callable[..., Any],
    run_scan: Callable[..., Any],
    escalate: Callable[..., Any] | None,
    client: Any,
    apply: Callable[..., Any] | None = None,
) -> list[_Due]:
    wanted = set(only)
    due: list[_Due] = []

    if SCAN in wanted:
        occurrence = last_due(SCAN_SCHEDULE, now, now - POLICIES[SCAN].catch_up)
        if occurrence is not None:
            call = partial(run_scan, settings)
            due.append(_Due(SCAN, occurrence.period, occurrence, call))

    if DIGEST in wanted:
        with db.session() as session:
            teams = list(session.scalars(select(Team).where(Team.active).order_by(Team.name)))
        for team in teams:
            try:
                schedule = Schedule.of(team)
            except ValueError as exc:
                log.error("team %s has an unusable schedule: %s", team.name, exc)
                continue
            # Occurrences before the team existed were never missed: nothing to catch up.
            since = max(now - POLICIES[DIGEST].catch_up, team.created_at)
            occurrence = last_due(schedule, now, since)
            if occurrence is None:
                continue
            name, period = team.name, occurrence.period
            call = partial(deliver_digest, settings, db, name, period, client)
            due.append(_Due(DIGEST, f"{name}:{period}", occurrence, call))

    if LEADERBOARD in wanted:
        occurrence = last_due(LEADERBOARD_SCHEDULE, now, now - POLICIES[LEADERBOARD].catch_up)
        if occurrence is not None:
            period = leaderboard_period(occurrence)
            call = partial(post_leaderboard, settings, db, client, period)
            due.append(_Due(LEADERBOARD, period, occurrence, call))

    if ESCALATION in wanted and escalate is not None and _escalation_on(settings):
        occurrence = last_due(ESCALATION_SCHEDULE, now, now - POLICIES[ESCALATION].catch_up)
        if occurrence is not None:
            call = partial(escalate, settings, db, client, occurrence.period)
            due.append(_Due(ESCALATION, occurrence.period, occurrence, call))

    if APPLY in wanted and apply is not None:
        occurrence = last_due(APPLY_SCHEDULE, now, now - POLICIES[APPLY].catch_up)
        if occurrence is not None:
            call = partial(apply, settings, db, slack=client)
            due.append(_Due(APPLY, occurrence.period, occurrence, call))
    return due


def _escalation_on(settings: Any) -> bool:
    teams = getattr(settings, "teams", None)
    return getattr(teams, "escalation", None) is not None


def _outcome(job: str, result: Any) -> str:
    # Delivery reports a Slack refusal in its result rather than raising; it is retried later,
    # as is a digest another process was still posting ("busy").
    if getattr(result, "status", None) in ("failed", "busy"):
        return "failed"
    # A scan that could not read some accounts still recorded the rest; retrying the whole scan
    # every hour would not help, so it counts as partial, not failed.
    if job == SCAN and getattr(result, "ok", True) is False:
        return "partial"
    return "done"


def run_due(
    settings: Any,
    db: Database,
    now: datetime,
    *,
    deliver_digest: Callable[..., Any],
    post_leaderboard: Callable[..., Any],
    run_scan: Callable[..., Any],
    escalate: Callable[..., Any] | None = None,
    apply: Callable[..., Any] | None = None,
    client: Any = None,
    lease: Lease | None = None,
    only: Iterable[str] = JOBS,
    clock: Clock | None = None,
    workers: int = DIGEST_WORKERS,
) -> list[Ran]:
    """Run every job that is due at `now` and not yet done; return what ran."""
    # With a lease, each claim is fenced: a process that lost leadership starts nothing more.
    # `clock` (default: `now` throughout) stamps claims and ends during a long tick.
    now = now.astimezone(UTC)
    tell = clock or (lambda: now)
    jobs = _due_jobs(
        settings,
        db,
        now,
        only,
        deliver_digest=deliver_digest,
        post_leaderboard=post_leaderboard,
        run_scan=run_scan,
        escalate=escalate,
        client=client,
        apply=apply,
    )
    ran: list[Ran] = []
    digests: list[tuple[_Due, Claim]] = []
    for job in jobs:
        try:
            claim = claim_run(db, job.job, job.key, tell(), lease=lease)
        except LeaseLost:
            log.warning("tick stopped: scheduler lease lost before job=%s key=%s", job.job, job.key)
            break
        if claim is None:
            continue
        if job.job == DIGEST:
            digests.append((job, claim))
        else:
            ran.append(_execute(db, job, claim, now, tell))
    if digests:
        # Claimed in order above (fenced, cheap); delivered side by side, a bounded few at once.
        with ThreadPoolExecutor(max(1, min(workers, len(digests))), "pare-digest") as pool:
            ran.extend(pool.map(lambda pair: _execute(db, *pair, now, tell), digests))
    return ran


def _execute(db: Database, job: _Due, claim: Claim, now: datetime, tell: Clock) -> Ran:
    """Run one claimed job and record how it ended; one job's failure never stops the rest."""
    late = now - job.occurrence.at
    if late > timedelta(minutes=5):
        log.info("catching up job=%s key=%s late_by=%s", job.job, job.key, late)
    log.info("job started: job=%s key=%s", job.job, job.key)
    try:
        result = job.call()
        status = _outcome(job.job, result)
        error = str(getattr(result, "error", "") or "") if status == "failed" else None
    except Exception as exc:  # one team's failure must not stop the others
        log.exception("job failed: job=%s key=%s", job.job, job.key)
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    finish_run(db, claim, status, tell(), error or "")
    log.info("job finished: job=%s key=%s status=%s", job.job, job.key, status)
    return Ran(job.job, job.key, status, error)


def _real_jobs() -> dict[str, Callable[..., Any]]:
    # Imported here: these modules pull in boto3 and Slack, which the scheduler's tests avoid.
    from bot.digest import deliver_digest
    from bot.escalation import escalate
    from bot.leaderboard import post_leaderboard
    from bot.removal import apply_approved
    from bot.scan import run_scan

    return {
        "deliver_digest": deliver_digest,
        "post_leaderboard": post_leaderboard,
        "run_scan": run_scan,
        "escalate": escalate,
        "apply": apply_approved,
    }


def _slack_client(settings: Any) -> Any:
    """Build the Web API client the digest and leaderboard jobs post with."""
    from bot.slack.client import make_client

    # Fail at start, naming the variable, rather than at every digest.
    settings.require_slack()
    return make_client(settings)


class SchedulerService:
    """One process's scheduler: keeps or seeks the lease, and ticks when it leads."""

    def __init__(
        self,
        settings: Any,
        db: Database,
        *,
        jobs: dict[str, Callable[..., Any]] | None = None,
        client: Any = None,
        clock: Clock = _utcnow,
        lease: Lease | None = None,
    ):
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.client = client
        self.clock = clock
        self.lease = lease or Lease(db)

    def keep_lease(self) -> bool:
        """Renew the lease, or try to take it; return whether this process leads."""
        try:
            return self.lease.acquire(self.clock())
        except Exception:
            # A database hiccup must not kill the job; without renewal the lease simply lapses.
            log.exception("scheduler lease check failed: holder=%s", self.lease.holder)
            return False

    def tick(self, only: Iterable[str] = JOBS) -> list[Ran]:
        """Run what is due if this process leads; otherwise do nothing."""
        now = self.clock()
        if not self.lease.held(now) and not self.keep_lease():
            return []
        jobs = self.jobs or _real_jobs()
        try:
            return run_due(
                self.settings,
                self.db,
                now,
                client=self.client,
                lease=self.lease,
                only=only,
                clock=self.clock,
                **jobs,
            )
        except Exception:
            log.exception("scheduler tick failed")
            return []

    def stop(self) -> None:
        """Give up the lease."""
        try:
            self.lease.release(self.clock())
        except Exception:
            log.exception("scheduler lease release failed: holder=%s", self.lease.holder)


class SchedulerHandle:
    """A running background scheduler; `stop()` shuts it down and frees the lease."""

    def __init__(self, service: SchedulerService, scheduler: Any, owns_db: bool):
        self.service = service
        self.scheduler = scheduler
        self._owns_db = owns_db

    @property
    def leading(self) -> bool:
        """Say whether this process currently leads."""
        return self.service.lease.held(self.service.clock())

    def stop(self, wait: bool = True) -> None:
        """Stop the jobs, release the lease and close the database."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        self.service.stop()
        if self._owns_db:
            self.service.db.engine.dispose()
        log.info("scheduler stopped")


def _sync_teams(settings: Any, db: Database) -> None:
    """Bring the teams table in line with the teams file, so the ticks see every team."""
    from bot.sync import sync_config

    with db.session() as session:
        sync_config(session, settings.teams)


def start_background(
    settings: Any,
    *,
    db: Database | None = None,
    jobs: dict[str, Callable[..., Any]] | None = None,
    client: Any = None,
    clock: Clock = _utcnow,
    sync: bool = True,
) -> SchedulerHandle:
    """Start the scheduler in background threads (for `pare serve` and `pare socket`)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    owns_db = db is None
    db = db or Database(settings.database_url)
    if sync:
        _sync_teams(settings, db)
    if client is None and jobs is None:
        client = _slack_client(settings)
    service = SchedulerService(settings, db, jobs=jobs, client=client, clock=clock)

    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    first = datetime.now(UTC)
    renew_every = max(1, int(service.lease.ttl.total_seconds() // 3))
    scheduler.add_job(
        service.keep_lease,
        IntervalTrigger(seconds=renew_every, timezone=UTC),
        id="pare-lease",
        next_run_time=first,
    )
    # Scans run in their own job so a long scan never delays a digest.
    scheduler.add_job(
        service.tick,
        IntervalTrigger(seconds=TICK_SECONDS, timezone=UTC),
        args=[(DIGEST, LEADERBOARD, ESCALATION)],
        id="pare-tick",
        next_run_time=first + timedelta(seconds=1),
    )
    scheduler.add_job(
        service.tick,
        IntervalTrigger(seconds=SCAN_TICK_SECONDS, timezone=UTC),
        args=[(SCAN, APPLY)],
        id="pare-scan",
        next_run_time=first + timedelta(seconds=1),
    )
    scheduler.start()
    log.info("scheduler started: holder=%s", service.lease.holder)
    return SchedulerHandle(service, scheduler, owns_db)


def run_forever(settings: Any) -> None:
    """Run only the scheduler until SIGTERM or Ctrl-C (the `pare scheduler` process)."""
    handle = start_background(settings)
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
    try:
        while not stopping.wait(3600):
            pass
    finally:
        handle.stop()
