"""The scheduler: one leader at a time, each job once per key, missed runs caught up."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from bot.db import Database
from bot.scheduler import (
    APPLY,
    DIGEST,
    LEADERBOARD,
    SCAN,
    JobPolicy,
    Lease,
    Ran,
    SchedulerService,
    claim_run,
    finish_run,
    run_due,
    start_background,
)
from models import JobRun, SchedulerLease, Team

SETTINGS = SimpleNamespace(name="settings under test")
TTL = timedelta(seconds=60)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Jobs:
    """Fake job callables that record each call; a team named in `failing` raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        self.scan_result: Any = SimpleNamespace(ok=True)
        self._lock = threading.Lock()

    def deliver_digest(self, settings, db, team_name, period, client) -> Any:
        assert settings is SETTINGS and isinstance(db, Database)
        with self._lock:
            self.calls.append((DIGEST, f"{team_name}:{period}"))
        if team_name in self.failing:
            raise RuntimeError(f"Slack refused the post for {team_name}")
        return SimpleNamespace(status="posted")

    def post_leaderboard(self, settings, db, client, period) -> str:
        with self._lock:
            self.calls.append((LEADERBOARD, period))
        return "posted"

    def run_scan(self, settings, as_of=None, accounts=None) -> Any:
        with self._lock:
            self.calls.append((SCAN, ""))
        return self.scan_result

    def apply(self, settings, db, slack=None) -> Any:
        with self._lock:
            self.calls.append((APPLY, ""))
        return SimpleNamespace(results=[], problems=[])

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "deliver_digest": self.deliver_digest,
            "post_leaderboard": self.post_leaderboard,
            "run_scan": self.run_scan,
            "apply": self.apply,
        }


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture
def other_process(db: Database) -> Iterator[Database]:
    """A second connection pool on the same database, as another replica would have."""
    other = Database(db.url)
    yield other
    other.engine.dispose()


def add_team(db: Database, name: str, tz: str, day: str, hour: int, created: datetime) -> None:
    with db.session() as session:
        session.add(
            Team(
                name=name,
                channel="C0TEAM" + name.upper()[:4],
                timezone=tz,
                digest_day=day,
                digest_hour=hour,
                created_at=created,
            )
        )


def tick(db: Database, jobs: Jobs, now: datetime, **kwargs: Any) -> list[Ran]:
    return run_due(SETTINGS, db, now, **jobs.as_kwargs(), **kwargs)


def digests_only(db: Database, jobs: Jobs, now: datetime, **kwargs: Any) -> list[Ran]:
    return tick(db, jobs, now, only=(DIGEST,), **kwargs)


# Leadership


def test_of_two_schedulers_on_one_database_only_one_leads(db, other_process, jobs):
    now = utc(2026, 12, 7, 9)
    add_team(db, "payments", "UTC", "monday", 9, utc(2026, 1, 1))
    first, second = Lease(db, "replica-a", ttl=TTL), Lease(other_process, "replica-b", ttl=TTL)

    assert first.acquire(now)
    assert not second.acquire(now)

    # The follower's tick is fenced out; the leader's runs the digest.
    assert digests_only(other_process, jobs, now, lease=second) == []
    assert digests_only(db, jobs, now, lease=first) == [Ran(DIGEST, "payments:2026-12-07", "done")]
    assert jobs.calls == [(DIGEST, "payments:2026-12-07")]


def test_an_expired_lease_passes_to_the_other_scheduler(db, other_process, jobs):
    start = utc(2026, 12, 7, 8)
    first, second = Lease(db, "replica-a", ttl=TTL), Lease(other_process, "replica-b", ttl=TTL)
    assert first.acquire(start)
    assert first.renew(start + timedelta(seconds=30))

    # The leader stops renewing (it hangs or crashes); after the expiry the other takes over.
    later = start + timedelta(seconds=30) + TTL
    assert not second.acquire(later - timedelta(seconds=1))
    assert second.acquire(later)
    assert (first.fencing, second.fencing) == (1, 2)

    # The old leader finds out on its next renewal and its fenced claims fail.
    add_team(db, "payments", "UTC", "monday", 8, utc(2026, 1, 1))
    assert digests_only(db, jobs, later, lease=first) == []
    assert not first.renew(later)
    assert not first.held(later)
    assert [r.key for r in digests_only(other_process, jobs, later, lease=second)] == [
        "payments:2026-12-07"
    ]


def test_a_released_lease_can_be_taken_at_once(db, other_process):
    now = utc(2026, 12, 7, 8)
    first, second = Lease(db, "replica-a", ttl=TTL), Lease(other_process, "replica-b", ttl=TTL)
    assert first.acquire(now)

    first.release(now + timedelta(seconds=5))

    assert second.acquire(now + timedelta(seconds=5))
    with db.session() as session:
        row = session.get_one(SchedulerLease, "scheduler")
        assert (row.holder, row.fencing) == ("replica-b", 2)


def test_renewing_keeps_the_fencing_token(db):
    now = utc(2026, 12, 7, 8)
    lease = Lease(db, "replica-a", ttl=TTL)

    for step in range(5):
        assert lease.acquire(now + timedelta(seconds=20 * step))

    assert lease.fencing == 1
    assert lease.expires_at == now + timedelta(seconds=80) + TTL


def race(url: str, racers: int, attempt: Callable[[Database, int], Any]) -> list[Any]:
    """Run attempt at once in several threads, each with its own pool; return what succeeded."""
    barrier = threading.Barrier(racers)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        replica = Database(url)
        try:
            barrier.wait()
            result = attempt(replica, index)
            if result:
                results.append(result)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            replica.engine.dispose()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_schedulers_racing_for_the_lease_elect_exactly_one(db):
    now = utc(2026, 12, 7, 8)

    def contend(replica: Database, index: int) -> str | None:
        lease = Lease(replica, f"replica-{index}", ttl=TTL)
        return lease.holder if lease.acquire(now) else None

    won = race(db.url, 6, contend)

    assert len(won) == 1
    with db.session() as session:
        assert session.get_one(SchedulerLease, "scheduler").holder == won[0]


def test_services_ticking_side_by_side_deliver_each_digest_once(db, other_process, jobs):
    start = utc(2026, 12, 7, 6)
    add_team(db, "payments", "Europe/Berlin", "monday", 9, start)
    add_team(db, "search", "America/New_York", "daily", 9, start)
    clock = SimpleNamespace(now=start)
    # A lease longer than the fake clock's hourly step, renewed each step as the lease job
    # renews it every 20 seconds in production.
    services = [
        SchedulerService(
            SETTINGS,
            database,
            jobs=jobs.as_kwargs(),
            clock=lambda: clock.now,
            lease=Lease(database, f"replica-{i}", ttl=timedelta(hours=2)),
        )
        for i, database in enumerate((db, other_process))
    ]

    # A week of hourly ticks from both replicas.
    for _ in range(24 * 7):
        for service in services:
            service.keep_lease()
            service.tick((DIGEST,))
        clock.now += timedelta(hours=1)

    digests = sorted(key for job, key in jobs.calls if job == DIGEST)
    assert digests == sorted(
        ["payments:2026-12-07"] + [f"search:2026-12-{day:02d}" for day in range(7, 14)]
    )
    assert [service.lease.fencing for service in services] == [1, None]


# Idempotent job runs


def test_a_second_tick_finds_the_work_done(db, other_process, jobs):
    now = utc(2026, 12, 7, 10, 30)
    add_team(db, "payments", "UTC", "monday", 9, utc(2026, 1, 1))

    first = tick(db, jobs, now)
    second = tick(other_process, jobs, now + timedelta(minutes=1))

    assert {(r.job, r.key, r.status) for r in first} == {
        (SCAN, "2026-12-07", "done"),
        (DIGEST, "payments:2026-12-07", "done"),
        (LEADERBOARD, "2026-W50", "done"),
        (APPLY, "2026-12-07", "done"),
    }
    assert second == []
    assert len(jobs.calls) == 4


def test_racing_claims_on_one_key_give_one_run(db):
    now = utc(2026, 12, 7, 9)

    claims = race(
        db.url, 6, lambda replica, _: claim_run(replica, DIGEST, "payments:2026-12-07", now)
    )

    assert len(claims) == 1
    with db.session() as session:
        assert len(session.scalars(select(JobRun)).all()) == 1


def test_a_run_left_running_by_a_crashed_process_is_retaken_after_the_timeout(db):
    policy = JobPolicy(timedelta(days=7), timedelta(minutes=30), timedelta(minutes=15))
    started = utc(2026, 12, 7, 9)
    crashed = claim_run(db, DIGEST, "payments:2026-12-07", started, policy=policy)
    assert crashed is not None

    still_running = claim_run(
        db, DIGEST, "payments:2026-12-07", started + timedelta(minutes=29), policy=policy
    )
    retaken = claim_run(
        db, DIGEST, "payments:2026-12-07", started + timedelta(minutes=30), policy=policy
    )

    assert still_running is None
    assert retaken is not None and retaken.retaken == "running"
    # The crashed process, should it wake up, cannot overwrite the new run's outcome.
    assert not finish_run(db, crashed, "done", started + timedelta(minutes=31))
    assert finish_run(db, retaken, "done", started + timedelta(minutes=32))
    with db.session() as session:
        row = session.scalars(select(JobRun)).one()
        assert (row.status, row.finished_at) == ("done", started + timedelta(minutes=32))


def test_a_failed_digest_is_retried_later_and_the_other_teams_still_get_theirs(db, jobs):
    now = utc(2026, 12, 7, 9)
    for name in ("payments", "search", "storage"):
        add_team(db, name, "UTC", "monday", 9, utc(2026, 1, 1))
    jobs.failing = {"search"}

    first = digests_only(db, jobs, now)
    too_soon = digests_only(db, jobs, now + timedelta(minutes=5))
    jobs.failing = set()
    retried = digests_only(db, jobs, now + timedelta(minutes=16))

    assert [(r.key, r.status) for r in first] == [
        ("payments:2026-12-07", "done"),
        ("search:2026-12-07", "failed"),
        ("storage:2026-12-07", "done"),
    ]
    assert "RuntimeError" in (first[1].error or "")
    assert too_soon == []
    assert [(r.key, r.status) for r in retried] == [("search:2026-12-07", "done")]


def test_a_delivery_that_reports_failure_is_recorded_as_failed(db, jobs):
    add_team(db, "payments", "UTC", "monday", 9, utc(2026, 1, 1))

    def refused(settings, db, team_name, period, client) -> Any:
        return SimpleNamespace(status="failed", error="channel_not_found")

    ran = run_due(
        SETTINGS,
        db,
        utc(2026, 12, 7, 9),
        deliver_digest=refused,
        post_leaderboard=jobs.post_leaderboard,
        run_scan=jobs.run_scan,
        only=(DIGEST,),
    )

    assert ran == [Ran(DIGEST, "payments:2026-12-07", "failed", "channel_not_found")]


def test_a_scan_that_missed_some_accounts_is_partial_and_not_rerun(db, jobs):
    jobs.scan_result = SimpleNamespace(ok=False)
    now = utc(2026, 12, 7, 5, 1)

    first = tick(db, jobs, now, only=(SCAN,))
    later = tick(db, jobs, now + timedelta(hours=2), only=(SCAN,))

    assert first == [Ran(SCAN, "2026-12-07", "partial")]
    assert later == []


# Catch-up


def test_a_digest_missed_while_down_is_caught_up_on_start(db, jobs):
    add_team(db, "payments", "Europe/Berlin", "monday", 9, utc(2026, 1, 1))
    # The last run before the outage: the digest of Monday 23 November.
    claim = claim_run(db, DIGEST, "payments:2026-11-23", utc(2026, 11, 23, 8))
    assert claim is not None
    finish_run(db, claim, "done", utc(2026, 11, 23, 8, 1))

    # Down from then until Wednesday 9 December: two Mondays were missed; the latest is sent.
    started = utc(2026, 12, 9, 14)
    caught_up = digests_only(db, jobs, started)
    next_tick = digests_only(db, jobs, started + timedelta(seconds=30))

    assert caught_up == [Ran(DIGEST, "payments:2026-12-07", "done")]
    assert next_tick == []


def test_a_team_added_after_its_digest_hour_waits_for_the_next_one(db, jobs):
    add_team(db, "payments", "UTC", "monday", 9, utc(2026, 12, 7, 12))

    assert digests_only(db, jobs, utc(2026, 12, 7, 12, 30)) == []
    assert [r.key for r in digests_only(db, jobs, utc(2026, 12, 14, 9))] == ["payments:2026-12-14"]


def test_a_digest_fires_at_the_first_valid_instant_on_the_spring_forward_day(db, jobs):
    # 02:00 does not exist in New York on 8 March 2026; the digest goes out at 03:00 EDT.
    add_team(db, "search", "America/New_York", "sunday", 2, utc(2026, 3, 7))

    assert digests_only(db, jobs, utc(2026, 3, 8, 6, 59, 59)) == []
    assert [r.key for r in digests_only(db, jobs, utc(2026, 3, 8, 7))] == ["search:2026-03-08"]
    assert digests_only(db, jobs, utc(2026, 3, 8, 8)) == []


def test_the_leaderboard_runs_weekly_keyed_by_iso_week(db, jobs):
    monday = utc(2026, 12, 7, 10)

    assert tick(db, jobs, monday - timedelta(minutes=1), only=(LEADERBOARD,)) == []
    assert tick(db, jobs, monday, only=(LEADERBOARD,)) == [Ran(LEADERBOARD, "2026-W50", "done")]
    assert tick(db, jobs, monday + timedelta(days=6), only=(LEADERBOARD,)) == []
    next_week = tick(db, jobs, monday + timedelta(days=7), only=(LEADERBOARD,))
    assert next_week == [Ran(LEADERBOARD, "2026-W51", "done")]


def test_approved_removals_are_applied_daily_after_the_scan(db, jobs):
    after_apply_hour = utc(2026, 12, 7, 6, 5)

    assert tick(db, jobs, after_apply_hour, only=(APPLY,)) == [Ran(APPLY, "2026-12-07", "done")]
    # Once a day: a second process, or a restart, finds it done.
    assert tick(db, jobs, after_apply_hour + timedelta(hours=3), only=(APPLY,)) == []
    assert jobs.calls == [(APPLY, "")]


def test_inactive_teams_get_no_digest(db, jobs):
    add_team(db, "payments", "UTC", "monday", 9, utc(2026, 1, 1))
    with db.session() as session:
        session.scalars(select(Team)).one().active = False

    assert digests_only(db, jobs, utc(2026, 12, 7, 9)) == []


# The background scheduler


def test_the_background_scheduler_starts_and_stopping_frees_the_lease(db, jobs):
    handle = start_background(SETTINGS, db=db, jobs=jobs.as_kwargs(), sync=False)
    try:
        job_ids = {job.id for job in handle.scheduler.get_jobs()}
        assert job_ids == {"pare-lease", "pare-tick", "pare-scan"}
    finally:
        handle.stop()

    assert not handle.scheduler.running
    assert not handle.leading
    with db.session() as session:
        lease = session.get(SchedulerLease, "scheduler")
        # Either it never took the lease, or it gave it back on stopping.
        assert lease is None or lease.expires_at <= datetime.now(UTC)
