"""Digest times in local time across daylight-saving changes, computed in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.periods import (
    DAILY,
    Schedule,
    due_between,
    last_due,
    leaderboard_period,
    next_occurrence,
    occurrence_on,
    week_key,
)
from bot.teams import DAYS


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "zone,day,utc_at,local_hour",
    [
        # 02:00 does not exist: the clock jumps from 02:00 to 03:00 local.
        ("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1), 3),
        ("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7), 3),
        ("Australia/Sydney", date(2026, 10, 4), utc(2026, 10, 3, 16), 3),
    ],
)
def test_a_skipped_hour_fires_once_at_the_first_valid_instant(zone, day, utc_at, local_hour):
    occurrence = occurrence_on(Schedule(zone, DAILY, 2), day)

    assert occurrence.at == utc_at
    assert occurrence.shifted
    assert occurrence.local.hour == local_hour
    assert occurrence.period == day.isoformat()
    # A second earlier the local clock had not yet reached 02:00.
    before = (occurrence.at - timedelta(seconds=1)).astimezone(occurrence.local.tzinfo)
    assert before.hour < 2


@pytest.mark.parametrize(
    "zone,day,hour,first_utc",
    [
        # 02:00-03:00 happens twice in Berlin (CEST, then CET): the first one fires.
        ("Europe/Berlin", date(2026, 10, 25), 2, utc(2026, 10, 25, 0)),
        ("America/New_York", date(2026, 11, 1), 1, utc(2026, 11, 1, 5)),
        ("Australia/Sydney", date(2026, 4, 5), 2, utc(2026, 4, 4, 15)),
    ],
)
def test_a_repeated_hour_fires_once_at_its_first_occurrence(zone, day, hour, first_utc):
    schedule = Schedule(zone, DAILY, hour)
    start = datetime.combine(day, datetime.min.time(), UTC) - timedelta(days=1)

    due = [
        o for o in due_between(schedule, start, start + timedelta(days=3)) if o.period == str(day)
    ]

    assert [o.at for o in due] == [first_utc]
    assert due[0].local.hour == hour and not due[0].shifted


def test_a_weekly_digest_keeps_its_local_hour_when_the_offset_changes():
    schedule = Schedule("Europe/Berlin", "monday", 9)

    winter = next_occurrence(schedule, utc(2026, 12, 4))
    summer = next_occurrence(schedule, utc(2026, 7, 1))

    assert (winter.at, winter.period) == (utc(2026, 12, 7, 8), "2026-12-07")
    assert (summer.at, summer.period) == (utc(2026, 7, 6, 7), "2026-07-06")
    assert winter.local.hour == summer.local.hour == 9


def test_a_zone_without_daylight_saving_fires_at_the_same_utc_hour_all_year():
    schedule = Schedule("Asia/Kolkata", DAILY, 9)

    year = due_between(schedule, utc(2026, 1, 1), utc(2027, 1, 1))

    assert len(year) == 365
    assert {(o.at.hour, o.at.minute) for o in year} == {(3, 30)}
    assert not any(o.shifted for o in year)


def test_next_occurrence_is_strictly_after_the_instant():
    schedule = Schedule("UTC", "friday", 9)

    on_time = next_occurrence(schedule, utc(2026, 12, 4, 9) - timedelta(microseconds=1))
    after = next_occurrence(schedule, utc(2026, 12, 4, 9))

    assert on_time.at == utc(2026, 12, 4, 9)
    assert after.at == utc(2026, 12, 11, 9)


def test_last_due_picks_the_latest_missed_occurrence():
    schedule = Schedule("America/New_York", DAILY, 8)

    latest = last_due(schedule, utc(2026, 12, 10, 20), utc(2026, 12, 1))

    assert latest is not None and latest.period == "2026-12-10"
    assert last_due(schedule, utc(2026, 12, 10, 12), utc(2026, 12, 10, 11)) is None


def test_the_schedule_of_a_configured_team_and_of_a_stored_team_agree():
    configured = SimpleNamespace(
        timezone="Europe/Berlin", digest=SimpleNamespace(day="tuesday", hour=10)
    )
    stored = SimpleNamespace(timezone="Europe/Berlin", digest_day="tuesday", digest_hour=10)

    assert (
        Schedule.of(configured) == Schedule.of(stored) == Schedule("Europe/Berlin", "tuesday", 10)
    )
    assert Schedule.of(stored).describe() == "tuesdays at 10:00 Europe/Berlin"


@pytest.mark.parametrize("kwargs", [{"timezone": "Mars/Olympus"}, {"day": "someday"}, {"hour": 24}])
def test_a_bad_schedule_is_refused(kwargs):
    with pytest.raises(ValueError):
        Schedule(**kwargs)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrence(Schedule(), datetime(2026, 12, 4))


@pytest.mark.parametrize(
    "day,key",
    [
        (date(2026, 12, 7), "2026-W50"),
        (date(2026, 12, 3), "2026-W49"),
        # ISO weeks cross the calendar year: 1 January 2027 is in 2026's last week.
        (date(2027, 1, 1), "2026-W53"),
        (date(2025, 12, 29), "2026-W01"),
    ],
)
def test_leaderboard_weeks_are_iso_weeks(day, key):
    assert week_key(day) == key


def test_the_leaderboard_period_is_the_week_of_its_occurrence():
    occurrence = next_occurrence(Schedule("UTC", "monday", 10), utc(2026, 12, 4))

    assert leaderboard_period(occurrence) == "2026-W50"


ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # changes at midnight: the skipped hour is 00:00
    "Australia/Sydney",
    "Australia/Lord_Howe",  # a half-hour change
    "Asia/Kolkata",
    "Pacific/Chatham",
]


def _local_dates(schedule: Schedule, start: datetime, end: datetime) -> list[str]:
    """Every local date in [start, end) on which the schedule should fire."""
    day = start.astimezone(schedule.tz).date()
    last = end.astimezone(schedule.tz).date()
    found = []
    while day <= last:
        if schedule.matches(day):
            found.append(day.isoformat())
        day += timedelta(days=1)
    return found


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    day=st.sampled_from([*DAYS, DAILY]),
    hour=st.integers(0, 23),
    year=st.integers(2024, 2030),
    ticks=st.lists(st.integers(47, 60 * 24 * 9), min_size=1, max_size=200),
)
def test_every_occurrence_in_a_year_fires_exactly_once_whatever_the_tick_pattern(
    zone, day, hour, year, ticks
):
    schedule = Schedule(zone, day, hour)
    start, end = utc(year, 1, 1), utc(year + 1, 1, 1)

    # A scheduler that wakes at arbitrary instants (minutes apart or days late, as after an
    # outage) and runs everything due since its previous wake-up.
    fired = []
    previous = start
    minutes = 0
    wakes = 0
    while previous < end:
        minutes += ticks[wakes % len(ticks)]
        wakes += 1
        now = min(start + timedelta(minutes=minutes), end)
        fired.extend(due_between(schedule, previous, now))
        previous = now

    periods = [o.period for o in fired]
    assert len(periods) == len(set(periods)), "an occurrence fired twice"
    assert fired == sorted(fired)
    # Every local date in the year's range fires once (dates at the edges may fall outside).
    expected = [
        p
        for p in _local_dates(schedule, start, end)
        if start < occurrence_on(schedule, date.fromisoformat(p)).at <= end
    ]
    assert periods == expected

    for occurrence in fired:
        local = occurrence.local
        assert local.date().isoformat() >= occurrence.period
        if occurrence.shifted:
            # Fired at the first instant whose local time had passed the missing hour.
            just_before = (occurrence.at - timedelta(seconds=1)).astimezone(schedule.tz)
            assert just_before.replace(tzinfo=None) < datetime.combine(
                date.fromisoformat(occurrence.period), datetime.min.time()
            ).replace(hour=hour)
        else:
            assert (local.date().isoformat(), local.hour, local.minute) == (
                occurrence.period,
                hour,
                0,
            )
