"""Slack figures: click acknowledgement latency, and delivering 500 teams' digests.

Run from the repository root: `python -m benchmarks.slack` (needs PostgreSQL on 127.0.0.1:5432;
set PARE_BENCH_DATABASE_URL to use another local server). Everything runs on 127.0.0.1: a
throwaway database, the local Slack stand-in, Pare's real HTTP endpoint and a bare Bolt app.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from sqlalchemy import create_engine, insert, select, text

from bot.db import Database
from bot.digest import deliver_digest
from bot.migrate import upgrade
from bot.scheduler import DIGEST_WORKERS, run_due
from bot.settings import Settings
from bot.slack import ids
from bot.slack.client import CHANNEL_INTERVAL_SECONDS, make_client
from bot.standin import SlackStandIn, click_payload, form_body, send_signed
from bot.sync import sync_config
from bot.web import build_wsgi_app, serve_in_thread
from models import Account, DigestItem, DigestMessage, Finding, Principal, Team

log = logging.getLogger(__name__)

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "benchmark-signing-secret-0123456789"
CHAMPION = "U0BENCH"
# A Monday 10:00 UTC: every team's default digest (Monday 09:00 UTC) is due.
MONDAY = datetime(2026, 12, 7, 10, tzinfo=UTC)
# 14 findings a team: one page of 12 rows plus a thread reply, so each channel gets two posts.
FINDINGS_PER_TEAM = 14


@contextmanager
def throwaway_database(base_url: str) -> Iterator[str]:
    """Create a PostgreSQL database for this run and drop it afterwards."""
    if not base_url.startswith("postgresql") or "127.0.0.1" not in base_url:
        raise SystemExit("the benchmark only uses a PostgreSQL server on 127.0.0.1")
    name = f"pare_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def teams_yaml(teams: int) -> str:
    """Return a teams file with `teams` teams, each in its own channel."""
    lines = [
        'accounts:\n  - id: "111122223333"\n    name: bench\n    sources: [last_used]',
        "teams:",
    ]
    for n in range(teams):
        lines.append(f"  - name: team-{n:03d}\n    channel: C{n:05d}\n    champions: [{CHAMPION}]")
    return "\n".join(lines) + "\n"


def seed(db: Database, settings: Settings, findings_per_team: int) -> None:
    """Give every team one role with `findings_per_team` unused services (bulk inserts)."""
    with db.session() as session:
        sync_config(session, settings.teams)
        account = session.scalars(select(Account)).one()
        teams = session.execute(select(Team.id, Team.name)).all()
        session.execute(
            insert(Principal),
            [
                {
                    "account_id": account.id,
                    "arn": f"arn:aws:iam::111122223333:role/{name}-app",
                    "kind": "role",
                    "name": f"{name}-app",
                    "team_id": team_id,
                    "data_state": "complete",
                }
                for team_id, name in teams
            ],
        )
        principals = session.execute(select(Principal.id)).scalars().all()
        now = datetime.now(UTC)
        session.execute(
            insert(Finding),
            [
                {
                    "principal_id": pid,
                    "key": f"unused_permission:svc{i}",
                    "kind": "unused_permission",
                    "status": "unused",
                    "service": f"svc{i}",
                    "actions": [f"svc{i}:Get{j}" for j in range(5)],
                    "source": "cloudtrail",
                    "reason": "No CloudTrail record in 90 days.",
                    "evidence_read_at": now,
                }
                for pid in principals
                for i in range(findings_per_team)
            ],
        )


def percentile(values: list[float], share: float) -> float:
    """Return the value below which `share` of values fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def click_latencies(url: str, bodies: list[str], clients: int) -> list[float]:
    """Send signed clicks from `clients` concurrent clients; return each ack's seconds."""

    def one(body: str) -> float:
        started = time.perf_counter()
        status, _ = send_signed(url, SECRET, body)
        if status != 200:
            raise RuntimeError(f"click answered {status}")
        return time.perf_counter() - started

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, bodies))


def bare_bolt(settings: Settings) -> SlackRequestHandler:
    """Return a Bolt app that only acknowledges clicks, behind the same WSGI adapter."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    app = App(
        signing_secret=SECRET,
        client=WebClient(token=token, base_url=settings.slack_api_url or ""),
        token_verification_enabled=False,
    )

    @app.action(re.compile(".*"))
    def _ack(ack: Any) -> None:
        ack()

    return SlackRequestHandler(app)


def _serve(kind: str, env: dict[str, str], ready: Any, stop: Any) -> None:
    """Serve Pare or the bare app in its own process, as a web replica would run."""
    logging.basicConfig(level=logging.ERROR)
    settings = Settings(**env)  # type: ignore[arg-type]
    if kind == "pare":
        wsgi: Any = build_wsgi_app(settings, Database(settings.database_url))
    else:
        wsgi = bare_bolt(settings)
    server = serve_in_thread(wsgi, threads=16)
    ready.put(server.url)
    stop.wait()
    server.stop()


@contextmanager
def serving(kind: str, env: dict[str, str]) -> Iterator[str]:
    """Run one endpoint in a separate process so the load generator does not share its GIL."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(kind, env, ready, stop), daemon=True)
    process.start()
    try:
        yield str(ready.get(timeout=60)) + "/slack/events"
    finally:
        stop.set()
        process.join(timeout=10)


def bench_acks(base_url: str, clicks: int, clients: int) -> dict[str, Any]:
    """Measure ack latency for Pare and a bare Bolt app on one PostgreSQL, same run."""
    with (
        throwaway_database(base_url) as url,
        SlackStandIn() as standin,
        tempfile.TemporaryDirectory() as tmp,
    ):
        teams = Path(tmp) / "teams.yaml"
        teams.write_text(teams_yaml(clicks // 12 + 1), encoding="utf-8")
        settings = Settings(
            SLACK_BOT_TOKEN=standin.token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=standin.url,
            DATABASE_URL=url,
            PARE_TEAMS_FILE=teams,
        )
        upgrade(url)
        db = Database(url)
        seed(db, settings, 12)
        client = make_client(settings)
        for team in settings.teams.teams:
            deliver_digest(settings, db, team.name, "bench", client, now=MONDAY)
        with db.session() as session:
            items = session.execute(
                select(DigestItem.id, DigestMessage.channel, DigestMessage.ts)
                .join(DigestMessage, DigestItem.message_id == DigestMessage.id)
                .order_by(DigestItem.id)
                .limit(clicks)
            ).all()
        bodies = [
            form_body(
                click_payload(
                    CHAMPION,
                    channel,
                    ts,
                    ids.APPROVE,
                    str(item),
                    standin.response_url(channel, CHAMPION, ts),
                )
            )
            for item, channel, ts in items
        ]
        bare_bodies = list(bodies)

        env = {
            "SLACK_BOT_TOKEN": standin.token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": standin.url,
            "DATABASE_URL": url,
            "PARE_TEAMS_FILE": str(teams),
        }
        with serving("bare", env) as bare_url:
            bare_times = click_latencies(bare_url, bare_bodies, clients)
        with serving("pare", env) as pare_url:
            pare_times = click_latencies(pare_url, bodies, clients)
            deadline = time.monotonic() + 60
            while standin.count("chat.update") < len(bodies) and time.monotonic() < deadline:
                time.sleep(0.05)
        updates = standin.count("chat.update")
        db.engine.dispose()
    return {
        "clicks": len(bodies),
        "clients": clients,
        "pare_median_ms": 1000 * statistics.median(pare_times),
        "pare_p99_ms": 1000 * percentile(pare_times, 0.99),
        "bare_median_ms": 1000 * statistics.median(bare_times),
        "bare_p99_ms": 1000 * percentile(bare_times, 0.99),
        "messages_updated": updates,
    }


def bench_delivery(base_url: str, teams: int, throttled: int) -> dict[str, Any]:
    """Deliver `teams` digests in one scheduler tick to a stand-in that enforces 1 msg/s."""
    with (
        throwaway_database(base_url) as url,
        SlackStandIn(per_channel_limit=True) as standin,
        tempfile.TemporaryDirectory() as tmp,
    ):
        path = Path(tmp) / "teams.yaml"
        path.write_text(teams_yaml(teams), encoding="utf-8")
        settings = Settings(
            SLACK_BOT_TOKEN=standin.token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=standin.url,
            DATABASE_URL=url,
            PARE_TEAMS_FILE=path,
        )
        upgrade(url)
        db = Database(url)
        seed(db, settings, FINDINGS_PER_TEAM)
        with db.session() as session:
            for team in session.scalars(select(Team)):
                team.created_at = MONDAY - timedelta(days=30)
        # Some requests are refused outright with 429 and Retry-After: 1, on top of the limit.
        standin.rate_limit("chat.postMessage", times=throttled, retry_after=1)

        started = time.perf_counter()
        ran = run_due(
            settings,
            db,
            MONDAY,
            deliver_digest=deliver_digest,
            post_leaderboard=lambda *a: None,
            run_scan=lambda *a: None,
            client=make_client(settings),
            only=("digest",),
        )
        elapsed = time.perf_counter() - started
        db.engine.dispose()

        posts = Counter()
        keys = Counter()
        for channel in standin.channels:
            for message in standin.messages(channel):
                for shown in [message, *message.replies]:
                    posts[channel] += 1
                    key = (shown.metadata or {}).get("event_payload", {}).get("key")
                    keys[key] += 1
        answered = standin.count("chat.postMessage")
    expected = teams * 2
    per_channel = max(posts.values()) if posts else 0
    floor = (per_channel - 1) * CHANNEL_INTERVAL_SECONDS + (1.0 if throttled else 0.0)
    return {
        "teams": teams,
        "workers": DIGEST_WORKERS,
        "jobs_done": sum(r.status == "done" for r in ran),
        "messages_expected": expected,
        "messages_posted": sum(posts.values()),
        "lost": expected - len(keys),
        "duplicated": sum(n - 1 for n in keys.values() if n > 1),
        "requests": answered,
        "refused_429": answered - sum(posts.values()),
        "seconds": elapsed,
        "floor_seconds": floor,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print the figures as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--teams", type=int, default=500)
    parser.add_argument("--throttled", type=int, default=50)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    base = os.environ.get("PARE_BENCH_DATABASE_URL", DEFAULT_URL)

    acks = bench_acks(base, args.clicks, args.clients)
    print(f"### Acknowledgement latency ({acks['clicks']} clicks, {acks['clients']} clients)")
    print("| endpoint | median | p99 |\n|---|---|---|")
    print(
        f"| Pare (decision + chat.update after the ack) | {acks['pare_median_ms']:.1f} ms "
        f"| {acks['pare_p99_ms']:.1f} ms |"
    )
    print(
        f"| bare Bolt app (ack only) | {acks['bare_median_ms']:.1f} ms "
        f"| {acks['bare_p99_ms']:.1f} ms |"
    )
    print(f"Messages updated after the acks: {acks['messages_updated']} of {acks['clicks']}.\n")

    d = bench_delivery(base, args.teams, args.throttled)
    print(f"### Delivering {d['teams']} digests in one tick ({d['workers']} workers)")
    print(
        f"{d['messages_posted']} of {d['messages_expected']} messages posted in "
        f"{d['seconds']:.1f} s (floor {d['floor_seconds']:.1f} s); {d['requests']} requests, "
        f"{d['refused_429']} answered 429; lost {d['lost']}, duplicated {d['duplicated']}; "
        f"{d['jobs_done']} jobs done."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
