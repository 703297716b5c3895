"""The outcome in the digest's thread, and Undo from Slack through Bolt's real dispatch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.removal.messages import UNDO_ACTION, outcome_blocks
from bot.removal.service import ChangeResult
from bot.settings import Settings
from bot.slack.client import make_client
from bot.standin import SlackStandIn, form_body
from bot.web import build_wsgi_app, serve_in_thread
from models import Change, Decision, Digest, DigestItem, DigestMessage, Team
from tests.removal.conftest import CHAMPION, World
from tests.removal.test_apply import INLINE, _inline_role
from tests.slack.conftest import SECRET, payload_file, post, wait_for

CHANNEL = "C0PAYMENTS"
SOURCE = "scenario_tests__test_block_actions__body__L161.json"


@pytest.fixture
def slack_world(world: World, tmp_path: Path) -> Iterator[tuple[World, SlackStandIn]]:
    with SlackStandIn() as standin:
        world.settings = Settings(
            SLACK_BOT_TOKEN=standin.token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=standin.url,
            DATABASE_URL=world.db.url,
            PARE_TEAMS_FILE=world.settings.teams_file,
        )
        yield world, standin


def _shown_in_a_digest(world: World, decision_id: int, standin: SlackStandIn) -> str:
    ts = make_client(world.settings).chat_postMessage(channel=CHANNEL, text="digest")["ts"]
    with world.db.session() as session:
        team = session.scalars(select(Team)).one()
        digest = Digest(team_id=team.id, period="2026-W49", channel=CHANNEL, status="posted")
        session.add(digest)
        session.flush()
        message = DigestMessage(digest_id=digest.id, part=1, channel=CHANNEL, ts=ts)
        session.add(message)
        session.flush()
        decision = session.get_one(Decision, decision_id)
        item = DigestItem(
            message_id=message.id,
            finding_id=decision.finding_id,
            round=decision.round,
            shown=decision.frozen,
        )
        session.add(item)
        session.flush()
        decision.digest_item_id = item.id
    return str(ts)


def _click(realdata: Path, standin: SlackStandIn, user: str, change_id: int, ts: str) -> str:
    body = payload_file(realdata, SOURCE)
    body["user"].update(id=user, username=user.lower(), name=user.lower())
    body["container"].update(message_ts=ts, channel_id=CHANNEL, is_ephemeral=False)
    body["channel"] = {"id": CHANNEL, "name": "payments"}
    body["response_url"] = standin.response_url(CHANNEL, user, ts)
    body["actions"][0].update(
        action_id=UNDO_ACTION, block_id=f"change:{change_id}", value=str(change_id)
    )
    return form_body(body)


def test_the_outcome_is_posted_in_the_thread_and_a_champion_undoes_it(
    slack_world: tuple[World, SlackStandIn], realdata: Path
) -> None:
    world, standin = slack_world
    _inline_role(world)
    decision_id = world.approve("app", "unused_permission", "s3")
    digest_ts = _shown_in_a_digest(world, decision_id, standin)

    report = world.apply()
    again = world.apply()

    [result] = report.results
    [digest] = standin.messages(CHANNEL)
    replies = digest.replies
    assert digest.ts == digest_ts and len(replies) == 1 and again.results == []
    outcome = replies[0]
    assert "Removed" in outcome.text and "app" in outcome.text
    [button] = [e for b in outcome.blocks if b["type"] == "actions" for e in b["elements"]]
    assert button["value"] == str(result.change_id)

    server = serve_in_thread(build_wsgi_app(world.settings, world.db))
    try:
        url = server.url + "/slack/events"
        status, _ = post(url, _click(realdata, standin, "U0MALLORY1", result.change_id, outcome.ts))
        assert status == 200
        wait_for(lambda: standin.count("chat.postEphemeral") or standin.count("response_url"))
        with world.db.session() as session:
            assert session.scalar(select(Change).where(Change.kind == "undo")) is None

        status, _ = post(url, _click(realdata, standin, CHAMPION, result.change_id, outcome.ts))
        assert status == 200

        def undone() -> Change | None:
            with world.db.session() as session:
                return session.scalar(
                    select(Change).where(Change.kind == "undo", Change.status == "applied")
                )

        undo = wait_for(undone)
    finally:
        server.stop()
    assert undo.requested_by == CHAMPION
    doc = world.iam.get_role_policy(RoleName="app", PolicyName="work")["PolicyDocument"]
    assert doc == INLINE
    replies = wait_for(lambda: standin.messages(CHANNEL)[0].replies[1:])
    assert "Undo of change" in replies[0].blocks[0]["text"]["text"]


def test_untrusted_text_is_escaped_and_within_limits() -> None:
    result = ChangeResult(
        change_id=7,
        kind="trim_permissions",
        mode="commit",
        status="applied",
        principal="arn:aws:iam::123456789012:role/a<b>&c",
        account="123456789012",
        removed=[f"s3:Get{n}" for n in range(500)],
        kept=[{"what": "<!channel>", "why": "x" * 5000}],
    )

    blocks = outcome_blocks(result)

    text = blocks[0]["text"]["text"]
    assert "a&lt;b&gt;&amp;c" in text and "<!channel>" not in text
    assert len(text) <= 3000 and len(blocks) <= 50
    assert blocks[-1]["elements"][0]["value"] == "7"
