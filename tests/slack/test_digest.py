"""Digest delivery: what is offered, Slack's limits, and exactly-once posting."""

from __future__ import annotations

import argparse
import json

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.digest import deliver_digest, run_digest_command
from bot.errors import PareError, UnknownTeam
from bot.slack import blocks as limits
from bot.slack.client import make_client
from bot.standin import SlackStandIn
from models import Digest, DigestItem, DigestMessage, Finding
from tests.slack.conftest import FAST, NOW, PAYMENTS, TEAMS_YAML, add_principal

EVIL = "<!channel> <https://evil.example|click> & <@U0ALICE>"


def _texts(block: dict) -> list[str]:
    found = []
    if "text" in block:
        found.append(block["text"]["text"])
    for element in block.get("elements", []):
        if isinstance(element.get("text"), dict):
            found.append(element["text"]["text"])
        elif "text" in element:
            found.append(element["text"])
    return found


def assert_within_limits(message) -> None:
    """Check one posted message against every Slack limit Pare promises."""
    assert len(message.blocks) <= limits.MAX_BLOCKS
    assert len(message.text) <= limits.MAX_FALLBACK
    assert len(json.dumps(message.blocks)) < 13_000
    for block in message.blocks:
        assert len(block.get("block_id", "")) <= limits.MAX_ID
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= limits.MAX_SECTION
        for element in block.get("elements", []):
            if element.get("type") == "button":
                assert len(element["text"]["text"]) <= limits.MAX_BUTTON_TEXT
                assert len(element["value"]) <= limits.MAX_BUTTON_VALUE
                assert len(element["action_id"]) <= limits.MAX_ID
        for text in _texts(block):
            assert "<!channel>" not in text and "<https://evil" not in text


def test_digest_offers_unused_and_counts_the_rest(settings, org, standin, client):
    outcome = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert outcome.status == "posted" and outcome.offered == 2 and outcome.messages == 1
    [message] = standin.messages(PAYMENTS)
    shown = standin.transcript(PAYMENTS)
    assert "`s3`" in shown and "`sqs`" in shown and "`iam`" not in shown
    assert "1 unknown" in shown and "1 too new to judge" in shown
    assert shown.count("[Approve removal]  [Defer…]  [Exempt…]") == 2
    assert message.metadata["event_type"] == "pare_digest_part"


def test_second_delivery_of_a_period_posts_nothing(settings, org, standin, client):
    first = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)
    again = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert (first.status, again.status) == ("posted", "already")
    assert standin.count("chat.postMessage") == 1


def test_unknown_team_is_a_clear_error(settings, org, client):
    with pytest.raises(UnknownTeam, match="nobody"):
        deliver_digest(settings, org, "nobody", "2026-W49", client)


class CrashAfterPost(WebClient):
    """A client whose process 'dies' right after Slack accepted the post."""

    def chat_postMessage(self, **kwargs):  # type: ignore[no-untyped-def]
        super().chat_postMessage(**kwargs)
        raise RuntimeError("process killed before the ts was recorded")


def test_crash_between_post_and_record_does_not_double_post(settings, org, standin, client):
    crashing = CrashAfterPost(token=standin.token, base_url=standin.url)
    with pytest.raises(RuntimeError):
        deliver_digest(settings, org, "payments", "2026-W49", crashing, now=NOW)

    retry = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert retry.status == "posted"
    assert standin.count("chat.postMessage") == 1
    assert standin.count("conversations.history") == 1
    with org.session() as session:
        [message] = session.scalars(select(DigestMessage)).all()
        assert message.ts == standin.messages(PAYMENTS)[0].ts


def test_rate_limit_waits_and_posts_once(settings, org, standin, client):
    standin.rate_limit("chat.postMessage", times=1, retry_after=1)

    outcome = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert outcome.status == "posted"
    assert standin.count("chat.postMessage") == 2
    assert len(standin.messages(PAYMENTS)) == 1


def test_slack_failure_is_retried_later_without_loss(settings, org, standin, client):
    standin.fail("chat.postMessage", times=1, error="channel_not_found")

    failed = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)
    retried = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert (failed.status, failed.error, retried.status) == (
        "failed",
        "channel_not_found",
        "posted",
    )
    assert len(standin.messages(PAYMENTS)) == 1
    with org.session() as session:
        assert session.scalars(select(Digest.status)).one() == "posted"


def test_worst_case_names_and_hundreds_of_services_stay_within_limits(
    settings, org, standin, client
):
    ec2 = [f"ec2:{'Describe' * 3}Thing{i}" for i in range(800)]
    findings = [{"service": "ec2", "actions": ec2, "reason": EVIL * 40}]
    findings += [{"service": f"svc{i}-{EVIL}"[:64], "actions": [EVIL]} for i in range(300)]
    add_principal(org, "payments", ("x" + EVIL * 3)[:128], findings, tags={"team": EVIL})

    outcome = deliver_digest(settings, org, "payments", "2026-W49", client, now=NOW)

    assert outcome.status == "posted" and outcome.offered == 303
    [first] = standin.messages(PAYMENTS)
    assert len(first.replies) == outcome.messages - 1 >= 25
    for message in [first, *first.replies]:
        assert_within_limits(message)
    wire = json.dumps([m.blocks for m in [first, *first.replies]])
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp;" in wire
    shown = standin.transcript(PAYMENTS)
    # A person sees the hostile text literally: no @channel ping, no disguised link.
    assert "<!channel> <https://evil.example|click> &" in shown
    assert "@channel" not in shown
    assert "… and" in shown  # the 800 EC2 actions were cut, with a count
    with org.session() as session:
        items = session.scalars(select(DigestItem)).all()
        assert len(items) == 303
        ec2_item = next(i for i in items if i.shown["service"] == "ec2")
        assert len(ec2_item.shown["actions"]) == 800  # frozen in full, cut only on screen


def test_thread_parts_are_paced_to_the_channel_limit_without_429s(settings, org, client):
    add_principal(org, "payments", "wide-role", [{"service": f"s{i}"} for i in range(20)])
    # Slack's window is measured on arrival; the pacer's on departure, so give it slack.
    with SlackStandIn(per_channel_limit=True, channel_interval=FAST / 2) as strict:
        strict_client = make_client(settings.model_copy(update={"slack_api_url": strict.url}))
        outcome = deliver_digest(settings, org, "payments", "2026-W49", strict_client, now=NOW)

        assert outcome.status == "posted" and outcome.messages == 2
        [first] = strict.messages(PAYMENTS)
        assert len(first.replies) == 1 and first.replies[0].thread_ts == first.ts
        assert strict.count("chat.postMessage") == 2  # paced: no 429 was needed


def test_a_429_waits_retry_after_and_posts_once(settings, org):
    waits: list[float] = []
    with SlackStandIn() as standin:
        standin.rate_limit("chat.postMessage", times=2, retry_after=7)
        aimed = settings.model_copy(update={"slack_api_url": standin.url})
        outcome = deliver_digest(
            settings, org, "payments", "2026-W49", make_client(aimed, sleep=waits.append), now=NOW
        )

        assert outcome.status == "posted"
        assert waits == [7.0, 7.0]
        assert standin.count("chat.postMessage") == 3 and len(standin.messages(PAYMENTS)) == 1


def test_nothing_open_posts_nothing(settings, org, standin, client):
    with org.session() as session:
        for finding in session.scalars(select(Finding)):
            finding.closed_at = NOW

    outcome = deliver_digest(settings, org, "search", "2026-W49", client, now=NOW)

    assert (outcome.status, outcome.messages) == ("empty", 0)
    assert standin.count("chat.postMessage") == 0


def _dry_run(tmp_path, monkeypatch, capsys, findings) -> str:
    """Run `pare digest --dry-run --findings FILE` for payments; return what it prints."""
    teams = tmp_path / "teams.yaml"
    teams.write_text(TEAMS_YAML, encoding="utf-8")
    monkeypatch.setenv("PARE_TEAMS_FILE", str(teams))
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(findings), encoding="utf-8")
    args = argparse.Namespace(team="payments", dry_run=True, findings=path)
    assert run_digest_command(args) == 0
    return capsys.readouterr().out


def test_dry_run_escapes_a_hostile_kind_from_a_findings_file(tmp_path, monkeypatch, capsys):
    finding = {
        "principal_arn": "arn:aws:iam::111122223333:role/r",
        "kind": "<!channel> <https://evil.example|Approve here>",
        "status": "unused",
        "service": "s3",
        "actions": ["s3:GetObject"],
    }
    shown = _dry_run(tmp_path, monkeypatch, capsys, [finding])
    assert "<!channel>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt;" in shown


@pytest.mark.parametrize(
    ("findings", "says"),
    [
        ({"findings": {"a": 1}}, "findings must be a list"),
        (None, "findings must be a list"),
        (42, "findings must be a list"),
        (["not an object"], "finding 1 is not an object"),
        ([{"status": "unused", "actions": {"s3:Get": 1}}], "actions must be a list of strings"),
        ([{"status": "unused", "actions": "s3:GetObject"}], "actions must be a list of strings"),
        ([{"status": "unused", "actions": [1, 2]}], "actions must be a list of strings"),
    ],
)
def test_a_misshapen_findings_file_is_one_clear_error(
    tmp_path, monkeypatch, capsys, findings, says
):
    with pytest.raises(PareError, match=says):
        _dry_run(tmp_path, monkeypatch, capsys, findings)
