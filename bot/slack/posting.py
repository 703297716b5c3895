"""Post a one-off message (leaderboard, escalation) exactly once per period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.db import Database
from bot.slack.blocks import Payload
from bot.slack.client import find_posted, metadata
from models import JobRun


def post_once(
    db: Database,
    client: WebClient,
    job: str,
    period: str,
    channel: str,
    event_type: str,
    build: Callable[[], Payload | None],
) -> str:
    """Post build()'s message for (job, period) once; return posted, already or nothing.

    The run row is inserted first and the post carries metadata naming the period, so a crash
    between posting and recording is found on the next attempt instead of posting twice.
    """
    created = True
    try:
        with db.session() as session:
            session.add(JobRun(job=job, run_key=period))
    except IntegrityError:
        created = False
    with db.session() as session:
        run = session.scalars(
            select(JobRun).where(JobRun.job == job, JobRun.run_key == period)
        ).one()
        if run.status == "done":
            return "already"
        if not created and find_posted(client, channel, event_type, period):
            run.status, run.finished_at = "done", datetime.now(UTC)
            return "already"
        payload = build()
        if payload is not None:
            client.chat_postMessage(
                channel=channel,
                text=payload.text,
                blocks=payload.blocks,
                metadata=metadata(event_type, period),
                unfurl_links=False,
            )
        run.status, run.finished_at = "done", datetime.now(UTC)
    return "posted" if payload is not None else "nothing"
