"""When digests, scans and leaderboards fall due: computed in UTC, shown in each team's time.

Local wall-clock schedules are ambiguous twice a year. A local hour that does not exist on the
spring-forward day fires once, at the first valid instant after it; an hour that occurs twice
on the autumn day fires once, at its first occurrence. Everything here is pure: no clock, no
database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.teams import DAYS

DAILY = "daily"

# Local dates to look behind and ahead of an instant. A skipped hour moves a firing forward by
# at most a day (Samoa skipped a whole date in 2011); a week plus that margin always holds
# the next weekly occurrence.
_LOOK_BEHIND = 2
_LOOK_AHEAD = 10


@dataclass(frozen=True)
class Schedule:
    """A recurring local hour: every day or one weekday, in one IANA time zone."""

    timezone: str = "UTC"
    day: str = "monday"
    hour: int = 9

    def __post_init__(self) -> None:
        if self.day not in DAYS and self.day != DAILY:
            raise ValueError(f"{self.day!r} is not a weekday name or 'daily'")
        if not 0 <= self.hour <= 23:
            raise ValueError(f"hour {self.hour} is not between 0 and 23")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{self.timezone!r} is not a known time zone") from None

    @property
    def tz(self) -> ZoneInfo:
        """Return the schedule's time zone."""
        return ZoneInfo(self.timezone)

    @classmethod
    def of(cls, team: Any) -> Schedule:
        """Return the digest schedule of a team from the teams file or the teams table."""
        digest = getattr(team, "digest", None)
        if digest is not None and hasattr(digest, "hour"):
            return cls(team.timezone, digest.day, digest.hour)
        return cls(team.timezone, team.digest_day, team.digest_hour)

    def matches(self, day: date) -> bool:
        """Say whether the schedule fires on this local date."""
        return self.day == DAILY or DAYS[day.weekday()] == self.day

    def describe(self) -> str:
        """Return the schedule as people read it, e.g. 'mondays at 09:00 Europe/Berlin'."""
        when = "every day" if self.day == DAILY else f"{self.day}s"
        return f"{when} at {self.hour:02d}:00 {self.timezone}"


@dataclass(frozen=True, order=True)
class Occurrence:
    """One firing of a schedule: its UTC instant, its period key and its local wall time."""

    at: datetime
    period: str
    local: datetime
    # True when the scheduled hour did not exist that day and it fires at the next valid instant.
    shifted: bool = False


def _require_aware(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return instant.astimezone(UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def local_to_utc(wall: datetime, tz: ZoneInfo) -> tuple[datetime, bool]:
    """Return the UTC instant a local wall time first reads, and whether it was in a gap."""
    earlier = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(earlier, tz) == wall:
        # fold=0 is the first of two instants on the autumn day: fire once, the first time.
        return earlier, False

    # In a gap fold=0 lands after it and fold=1 before it; the first instant whose wall time
    # has reached `wall` is the transition itself, found by bisection to the second.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = earlier
    if low > high:
        low, high = high, low
    while (high - low) > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if _wall(middle, tz) >= wall:
            high = middle
        else:
            low = middle
    return high, True


def occurrence_on(schedule: Schedule, day: date) -> Occurrence | None:
    """Return the schedule's occurrence on a local date, or None if it does not fire that day."""
    if not schedule.matches(day):
        return None
    tz = schedule.tz
    at, shifted = local_to_utc(datetime.combine(day, time(schedule.hour)), tz)
    return Occurrence(at=at, period=day.isoformat(), local=at.astimezone(tz), shifted=shifted)


def _occurrences(schedule: Schedule, first: date, last: date) -> list[Occurrence]:
    found = []
    day = first
    while day <= last:
        occurrence = occurrence_on(schedule, day)
        if occurrence is not None:
            found.append(occurrence)
        day += timedelta(days=1)
    return sorted(found)


def next_occurrence(schedule: Schedule, after: datetime) -> Occurrence:
    """Return the first occurrence strictly after a UTC instant."""
    after = _require_aware(after, "after")
    start = after.astimezone(schedule.tz).date()
    first = start - timedelta(days=_LOOK_BEHIND)
    for occurrence in _occurrences(schedule, first, start + timedelta(days=_LOOK_AHEAD)):
        if occurrence.at > after:
            return occurrence
    raise AssertionError(f"no occurrence of {schedule} within {_LOOK_AHEAD} days of {after}")


def due_between(schedule: Schedule, start: datetime, end: datetime) -> list[Occurrence]:
    """Return the occurrences with start < at <= end, oldest first."""
    start = _require_aware(start, "start")
    end = _require_aware(end, "end")
    if end <= start:
        return []
    tz = schedule.tz
    first = start.astimezone(tz).date() - timedelta(days=_LOOK_BEHIND)
    last = end.astimezone(tz).date() + timedelta(days=1)
    return [o for o in _occurrences(schedule, first, last) if start < o.at <= end]


def last_due(schedule: Schedule, now: datetime, since: datetime) -> Occurrence | None:
    """Return the latest occurrence with since < at <= now, the one a catch-up should run."""
    due = due_between(schedule, since, now)
    return due[-1] if due else None


def week_key(day: date) -> str:
    """Return the ISO week of a date as a period key, e.g. '2026-W49'."""
    iso = day.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def leaderboard_period(occurrence: Occurrence) -> str:
    """Return the leaderboard period key (the ISO week) of a weekly occurrence."""
    return week_key(date.fromisoformat(occurrence.period))
