"""`/pare` through the real endpoint, the leaderboard, and `pare digest --dry-run`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from bot.digest import deliver_digest, run_digest_command
from bot.leaderboard import post_leaderboard, standings
from bot.slack import ids
from bot.slack.blocks import Payload
from bot.standin import form_body
from tests.slack.conftest import (
    ALICE,
    BOARD,
    CAROL,
    MALLORY,
    NOW,
    PAYMENTS,
    add_principal,
    payload_file,
    post,
    wait_for,
)

# A real slash-command body from bolt-python's WSGI adapter tests, adapted to /pare.
SOURCE = "adapter_tests__wsgi__test_wsgi_http__body__L107.txt"


def command(realdata: Path, standin, user: str, text: str) -> str:
    path = realdata / "slack_payloads" / "bolt-python-tests" / SOURCE
    fields = dict(parse_qsl(path.read_text(encoding="utf-8").strip()))
    # ssl_check=1 marks Slack's certificate probe, which Bolt answers without dispatching.
    fields.pop("ssl_check")
    fields.update(command=ids.COMMAND, text=text, user_id=user, channel_id=PAYMENTS)
    fields["response_url"] = standin.response_url(PAYMENTS, user)
    return urlencode(fields)


def ask(realdata, endpoint, standin, user: str, text: str) -> dict:
    before = standin.count("response_url")
    status, _ = post(endpoint, command(realdata, standin, user, text))
    assert status == 200
    wait_for(lambda: standin.count("response_url") == before + 1)
    answer = standin.calls["response_url"][-1]
    assert answer["response_type"] == "ephemeral"
    return answer


def shown(answer: dict) -> str:
    return "\n".join(b["text"]["text"] for b in answer["blocks"])


def test_help_and_unknown_subcommands_answer_with_help(realdata, endpoint, standin):
    for text in ("help", "", "frobnicate"):
        assert "/pare status" in shown(ask(realdata, endpoint, standin, MALLORY, text))
    assert standin.messages(PAYMENTS)[-1].visible_to == MALLORY


def test_status_lists_the_callers_teams(realdata, endpoint, standin):
    alice = shown(ask(realdata, endpoint, standin, ALICE, "status"))
    carol = shown(ask(realdata, endpoint, standin, CAROL, "status"))
    nobody = shown(ask(realdata, endpoint, standin, MALLORY, "status"))

    assert "*payments*" in alice and "2 open finding(s)" in alice and "search" not in alice
    assert "*search*" in carol and "1 open finding(s)" in carol
    assert "not a champion" in nobody


def test_role_lists_findings_across_accounts_and_escapes_names(realdata, endpoint, org, standin):
    add_principal(org, None, "<!here>", [{"service": "kms"}])

    billing = shown(ask(realdata, endpoint, standin, MALLORY, "role billing-worker"))
    evil = shown(ask(realdata, endpoint, standin, MALLORY, "role <!here>"))
    missing = shown(ask(realdata, endpoint, standin, MALLORY, "role ghost"))

    assert "`s3`: unused" in billing and "`iam`: unknown" in billing
    assert "&lt;!here&gt;" in evil and "<!here>" not in evil and "no team" in evil
    assert "No role or user called `ghost`" in missing


def test_block_actions_payload_from_another_app_is_ignored_politely(realdata, endpoint, standin):
    body = payload_file(realdata, "scenario_tests__test_block_actions__body__L161.json")
    body["response_url"] = standin.response_url(PAYMENTS, "W111")
    status, _ = post(endpoint, form_body(body))
    assert status in (200, 404)
    assert standin.count("chat.update") == 0


def test_leaderboard_ranks_by_progress_and_posts_once_per_period(settings, org, standin, client):
    deliver_digest(settings, org, "search", "2026-W49", client, now=NOW)
    from bot.decisions import decide

    decide(org, 1, CAROL, "approve")

    ranking = standings(org)
    assert [(s.team, s.resolved, s.found) for s in ranking] == [
        ("search", 1, 1),
        ("payments", 0, 2),
    ]
    first = post_leaderboard(settings, org, client, "2026-W49")
    again = post_leaderboard(settings, org, client, "2026-W49")

    assert (first, again) == ("posted", "already")
    [board] = standin.messages(BOARD)
    assert "1. *search*: 100% (1 of 1" in standin.transcript(BOARD)
    assert board.metadata["event_type"] == "pare_leaderboard"


def test_dry_run_prints_payloads_and_sends_nothing(settings, org, standin, monkeypatch, capsys):
    for name, value in {
        "SLACK_BOT_TOKEN": standin.token,
        "SLACK_SIGNING_SECRET": settings.slack_signing_secret.get_secret_value(),
        "SLACK_API_URL": standin.url,
        "DATABASE_URL": settings.database_url,
        "PARE_TEAMS_FILE": str(settings.teams_file),
    }.items():
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(team="payments", dry_run=True, findings=None)

    assert run_digest_command(args) == 0

    [payload] = json.loads(capsys.readouterr().out)
    assert payload["channel"] == PAYMENTS and len(payload["blocks"]) == 8
    assert sum(standin.calls.values(), []) == []


def test_dry_run_from_an_analyze_file_needs_no_database(
    settings, standin, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PARE_TEAMS_FILE", str(settings.teams_file))
    monkeypatch.setenv("DATABASE_URL", "sqlite:///" + str(tmp_path / "never-created.db"))
    findings = tmp_path / "findings.json"
    rows = [
        {
            "principal_arn": f"arn:aws:iam::111122223333:role/<!channel>-{n}",
            "kind": "unused_permission",
            "service": f"svc{n}",
            "actions": None,
            "status": "unused" if n % 2 else "unknown",
            "reason": "no use in the window",
            "last_used": None,
            "source": "cloudtrail",
        }
        for n in range(40)
    ]
    findings.write_text(json.dumps(rows), encoding="utf-8")
    args = argparse.Namespace(team="payments", dry_run=True, findings=findings)

    assert run_digest_command(args) == 0

    payloads = json.loads(capsys.readouterr().out)
    assert len(payloads) == 2 and payloads[1]["thread_ts"] == "(ts of part 1)"
    assert "<!channel>" not in json.dumps(payloads)
    assert "20 unknown" in json.dumps(payloads[0])
    assert not (tmp_path / "never-created.db").exists() and standin.calls == {}


def test_dry_run_of_a_real_analyze_file_prints_exact_payloads_and_touches_nothing(
    realdata, settings, tmp_path, monkeypatch, capsys
):
    from bot.cli import main
    from tests.slack.test_limits import assert_within_limits

    example = realdata / "aws_api_responses" / "cloudsplaining-examples" / "example.json"
    assert main(["analyze", "--authorization-details", str(example), "--json"]) == 0
    analyzed = tmp_path / "findings.json"
    analyzed.write_text(capsys.readouterr().out, encoding="utf-8")
    found = json.loads(analyzed.read_text(encoding="utf-8"))
    unused = [f for f in found if f["status"] == "unused"]
    unknown = sum(f["status"] == "unknown" for f in found)

    never = tmp_path / "never-created.db"
    monkeypatch.setenv("PARE_TEAMS_FILE", str(settings.teams_file))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{never}")
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["digest", "--team", "payments", "--dry-run", "--findings", str(analyzed)]) == 0

    payloads = json.loads(capsys.readouterr().out)
    assert not never.exists()
    assert payloads[0]["channel"] == PAYMENTS and "thread_ts" not in payloads[0]
    assert all(p["thread_ts"] == "(ts of part 1)" for p in payloads[1:])
    summary = payloads[0]["blocks"][1]["text"]["text"]
    principals = len({f["principal_arn"] for f in unused})
    assert f"*{len(unused)}* finding(s) on *{principals}* principal(s)" in summary
    assert f"{unknown} unknown" in summary
    rows = [b for p in payloads for b in p["blocks"] if b.get("block_id", "").startswith("item:")]
    assert len(rows) == len(unused)
    for payload in payloads:
        assert_within_limits(Payload(payload["text"], payload["blocks"]))
