"""Fixtures for the Slack side: the stand-in, settings aimed at it, an org, the HTTP endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.db import Database
from bot.digest import Backoff
from bot.settings import Settings
from bot.slack import ids
from bot.slack.client import ChannelPacer, make_client
from bot.standin import SlackStandIn, form_body, send_signed, submission_payload
from bot.sync import sync_config
from bot.web import build_wsgi_app, serve_in_thread
from models import Account, Finding, Principal, Team

# The signing secret of Slack's documented test vector (python-slack-sdk-tests).
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALICE, BOB, CAROL, ADMIN, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0ADMIN", "U0MALLORY"
PAYMENTS, SEARCH, BOARD = "C0PAY", "C0SEARCH", "C0BOARD"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

TEAMS_YAML = f"""
admins: [{ADMIN}]
leaderboard_channel: {BOARD}
accounts:
  - id: "111122223333"
    name: prod
    sources: [last_used]
teams:
  - name: payments
    channel: {PAYMENTS}
    champions: [{ALICE}, {BOB}]
  - name: search
    channel: {SEARCH}
    champions: [{CAROL}]
"""


FAST = 0.02


@pytest.fixture(autouse=True)
def fast_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep Slack's waits short: per-channel pacing and retry backoff take milliseconds."""
    import bot.digest

    monkeypatch.setattr(bot.digest, "PACER", ChannelPacer(FAST))
    monkeypatch.setattr(bot.digest, "BACKOFF", Backoff(attempts=4, first=FAST / 2))


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    """A running Slack stand-in on 127.0.0.1."""
    with SlackStandIn() as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, db: Database, standin: SlackStandIn) -> Settings:
    """Settings aimed at the stand-in and the test database."""
    teams = tmp_path / "teams.yaml"
    teams.write_text(TEAMS_YAML, encoding="utf-8")
    return Settings(
        SLACK_BOT_TOKEN=standin.token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=standin.url,
        DATABASE_URL=db.url,
        PARE_TEAMS_FILE=teams,
        PARE_DEFER_DAYS=30,
    )


@pytest.fixture
def client(settings: Settings):  # type: ignore[no-untyped-def]
    """A Web API client aimed at the stand-in."""
    return make_client(settings)


def add_principal(
    db: Database, team: str | None, name: str, findings: list[dict[str, Any]], **extra: Any
) -> int:
    """Insert a role with findings (each a dict of Finding columns); return the principal id."""
    with db.session() as session:
        account = session.scalars(select(Account)).first()
        team_id = session.scalar(select(Team.id).where(Team.name == team)) if team else None
        principal = Principal(
            account_id=account.id,
            arn=f"arn:aws:iam::{account.account_id}:role/{name}-{time.monotonic_ns()}",
            kind="role",
            name=name,
            team_id=team_id,
            data_state=extra.pop("data_state", "complete"),
            **extra,
        )
        session.add(principal)
        session.flush()
        for spec in findings:
            values = {
                "key": f"unused_permission:{spec.get('service')}",
                "kind": "unused_permission",
                "status": "unused",
                "source": "cloudtrail",
                "reason": "no CloudTrail record in 90 days",
                "evidence_read_at": NOW - timedelta(hours=1),
                **spec,
            }
            session.add(Finding(principal_id=principal.id, **values))
        return principal.id


@pytest.fixture
def org(db: Database, settings: Settings) -> Database:
    """Teams synced from the file; payments owns a role with two unused services and more."""
    with db.session() as session:
        sync_config(session, settings.teams)
    add_principal(
        db,
        "payments",
        "billing-worker",
        [
            {"service": "s3", "actions": ["s3:DeleteBucket", "s3:PutBucketPolicy"]},
            {"service": "sqs", "actions": None},
            {"service": "iam", "status": "unknown", "actions": ["iam:PassRole"]},
        ],
    )
    add_principal(db, "payments", "fresh-role", [{"service": "ec2", "status": "too_new"}])
    add_principal(db, "search", "indexer", [{"service": "dynamodb", "actions": None}])
    return db


@pytest.fixture
def endpoint(settings: Settings, org: Database, standin: SlackStandIn) -> Iterator[str]:
    """Pare's real HTTP endpoint, served by waitress on 127.0.0.1."""
    server = serve_in_thread(build_wsgi_app(settings, org))
    yield server.url + "/slack/events"
    server.stop()


def payload_file(realdata: Path, name: str) -> dict[str, Any]:
    """Load one of bolt-python's test payloads from the real-data folder."""
    path = realdata / "slack_payloads" / "bolt-python-tests" / name
    return json.loads(path.read_text(encoding="utf-8"))


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until check() is truthy: listeners keep working after the ack has been sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the listener")


def post(url: str, body: str, **kwargs: Any) -> tuple[int, str]:
    """Send a signed request to Pare with the test secret."""
    return send_signed(url, SECRET, body, **kwargs)


def submit(
    url: str, user: str, view: dict[str, Any], reason: str = "", days: int | None = None
) -> tuple[int, str]:
    """Submit an opened Defer or Exempt modal the way Slack does."""
    values: dict[str, Any] = {ids.REASON_BLOCK: (ids.REASON_INPUT, reason)}
    if days is not None:
        values[ids.PERIOD_BLOCK] = (ids.PERIOD_INPUT, days)
    return post(url, form_body(submission_payload(user, view, values)))
