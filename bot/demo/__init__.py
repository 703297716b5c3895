"""`pare demo`: the whole loop on the embedded default, with no Slack workspace or AWS account.

AWS is moto, in this process; Slack is the local stand-in, a real HTTP server on 127.0.0.1.
Pare's own code runs unchanged: the real scan, the real digest delivery, the real HTTP
endpoint with signature checks, the real decisions and leaderboard.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from bot.demo import org

STANDIN_TOKEN = "xoxb-demo-standin-not-a-real-token"


@contextmanager
def _fake_aws_environment() -> Iterator[None]:
    """Give boto3 throwaway credentials so nothing can reach a real account."""
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
    )
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(
        AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION=org.REGION
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say()
    _say(f"== {text} " + "=" * max(0, 76 - len(text)))


def _buttons(message: Any) -> list[dict[str, Any]]:
    found = []
    for block in message.blocks or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("type") == "button":
                found.append(element)
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            found.append(accessory)
    return found


def _section_text(message: Any, value: str) -> str:
    """Return the text of the row whose buttons carry this value, for the narration."""
    for block in message.blocks or []:
        if block.get("block_id", "").endswith(f":{value}") and block.get("type") == "section":
            return block.get("text", {}).get("text", "")
    return ""


# What the demo champion types into the Defer modal: 30 days, and why.
DEMO_DEFER = {
    "period": ("period_days", 30),
    "reason": ("reason_text", "Quarterly batch job; look again next quarter"),
}


class _Clicker:
    """Clicks buttons the way Slack does: a signed block_actions POST to Pare's endpoint."""

    def __init__(self, standin: Any, endpoint: str, secret: str):
        self.standin = standin
        self.endpoint = endpoint
        self.secret = secret

    def click(self, user: str, channel: str, message: Any, button: dict[str, Any]) -> int:
        from bot.standin import click_payload, form_body, send_signed

        response_url = self.standin.response_url(channel, user, message.ts)
        payload = click_payload(
            user, channel, message.ts, button["action_id"], button["value"], response_url
        )
        status, _ = send_signed(self.endpoint, self.secret, form_body(payload))
        return status

    def submit(self, user: str, view: dict[str, Any], values: dict[str, Any]) -> int:
        from bot.standin import form_body, send_signed, submission_payload

        payload = submission_payload(user, view, values)
        status, _ = send_signed(self.endpoint, self.secret, form_body(payload))
        return status


def _first_with_buttons(standin: Any, channel: str) -> Any:
    for message in standin.messages(channel):
        if _buttons(message):
            return message
        for reply in getattr(message, "replies", []) or []:
            if _buttons(reply):
                return reply
    return None


def _wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _aws_state() -> list[str]:
    """Describe, from the moto accounts, what the demo's removals touch."""
    iam = org._client("iam", org.PAYMENTS)
    attached = iam.list_attached_role_policies(RoleName="payments-api")["AttachedPolicies"]
    names = sorted(p["PolicyName"] for p in attached)
    data = org._client("iam", org.DATA)
    keys = data.list_access_keys(UserName="data-analyst")["AccessKeyMetadata"]
    statuses = ", ".join(f"{k['AccessKeyId']} {k['Status']}" for k in keys)
    return [
        f"payments-api managed policies: {', '.join(names)}",
        f"data-analyst access keys: {statuses}",
    ]


def _show_removal(settings: Any, db: Any, client: Any, now: datetime) -> None:
    from bot.removal import apply_approved, undo_change

    _say("before, in AWS (moto):")
    for line in _aws_state():
        _say(f"  {line}")
    dry = apply_approved(settings, db, commit=False, as_of=now, slack=client)
    _say("\npare apply (dry run, the default):")
    _say(_indent(dry.summary()))
    real = apply_approved(settings, db, commit=True, as_of=now, slack=client)
    _say("\npare apply --commit:")
    _say(_indent(real.summary()))
    _say("after, in AWS (moto):")
    for line in _aws_state():
        _say(f"  {line}")
    applied = [r for r in real.results if r.status == "applied"]
    if not applied:
        return
    first = applied[0]
    undone = undo_change(
        settings, db, first.change_id, user=org.CHAMPIONS["payments"][0], slack=client
    )
    _say(f"\npare undo {first.change_id}:")
    _say(_indent(undone.line()))
    _say("after the undo, in AWS (moto):")
    for line in _aws_state():
        _say(f"  {line}")


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def run_demo(workdir: Path, keep_going: bool = False) -> int:
    """Run the whole loop locally and print what each channel shows."""
    from moto import mock_aws

    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    now = datetime.now(UTC)

    with _fake_aws_environment(), mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        return _run(workdir, now, keep_going)


def _run(workdir: Path, now: datetime, keep_going: bool) -> int:
    from bot import migrate
    from bot.db import Database
    from bot.digest import deliver_digest
    from bot.leaderboard import post_leaderboard
    from bot.scan import run_scan
    from bot.settings import Settings
    from bot.slack.client import make_client
    from bot.standin import SlackStandIn
    from bot.web import build_wsgi_app, serve_in_thread
    from models import Decision

    _heading("1. A sample organisation in moto")
    built = org.build(now)
    _say(
        f"{built['accounts']} accounts, {built['roles']} roles, {built['users']} users, "
        f"{built['trail_files']} CloudTrail log files in S3 (activity from a public data set)"
    )
    teams_path = workdir / "teams.yaml"
    teams_path.write_text(yaml.safe_dump(org.teams_file(now), sort_keys=False))
    _say(f"teams file: {teams_path}")

    standin = SlackStandIn(token=STANDIN_TOKEN).start()
    for team, channel in org.CHANNELS.items():
        standin.add_channel(channel, team)
        for user in org.CHAMPIONS[team]:
            standin.add_user(user, f"{team}-champion")
    standin.add_user(org.BYSTANDER, "bystander")
    standin.add_channel(org.LEADERBOARD_CHANNEL, "pare-leaderboard")
    secret = secrets.token_hex(16)
    database_url = f"sqlite:///{workdir / 'pare.db'}"
    settings = Settings(
        SLACK_BOT_TOKEN=standin.token,
        SLACK_SIGNING_SECRET=secret,
        SLACK_API_URL=standin.url,
        DATABASE_URL=database_url,
        PARE_TEAMS_FILE=str(teams_path),
    )
    migrate.upgrade(settings.database_url)
    db = Database(settings.database_url)
    server = None
    try:
        _heading("2. pare scan")
        report = run_scan(settings, as_of=now)
        _say(report.summary())

        _heading("3. Digests, posted to the local Slack stand-in")
        server = serve_in_thread(build_wsgi_app(settings, db))
        endpoint = f"{server.url}/slack/events"
        _say(f"Slack stand-in: {standin.url}   Pare's endpoint: {endpoint}")
        client = make_client(settings)
        period = now.date().isoformat()
        for team in settings.teams.teams:
            outcome = deliver_digest(settings, db, team.name, period, client)
            _say(
                f"{team.name}: {outcome.status}, {outcome.offered} findings offered in "
                f"{outcome.messages} message(s)"
            )

        _heading("4. Champions decide; a bystander is refused")
        clicker = _Clicker(standin, endpoint, secret)
        decisions = 0

        def count_decisions() -> int:
            with db.session() as session:
                return session.scalar(select(func.count(Decision.id))) or 0

        payments = org.CHANNELS["payments"]
        message = _first_with_buttons(standin, payments)
        if message is not None:
            approve = next(b for b in _buttons(message) if b["action_id"] == "pare.approve")
            updates = standin.count("chat.update")
            status = clicker.click(org.CHAMPIONS["payments"][0], payments, message, approve)
            decisions += 1
            _wait_for(lambda: standin.count("chat.update") > updates)
            _say(f"payments champion clicked Approve (HTTP {status})")
            status = clicker.click(org.CHAMPIONS["payments"][0], payments, message, approve)
            _say(f"...and clicked it again (HTTP {status}): still one decision")
            message = _first_with_buttons(standin, payments)
            if message is not None:
                defer = next(b for b in _buttons(message) if "defer" in b["action_id"])
                status = clicker.click(org.CHAMPIONS["payments"][0], payments, message, defer)
                # Defer opens a modal asking for the period and a reason; submit it.
                _wait_for(lambda: standin.views)
                clicker.submit(org.CHAMPIONS["payments"][0], standin.views[-1], DEMO_DEFER)
                decisions += 1
                _wait_for(lambda: count_decisions() >= decisions)
                _say(f"payments champion clicked Defer (HTTP {status})")

        data = org.CHANNELS["data"]
        message = _first_with_buttons(standin, data)
        if message is not None:
            approve = next(b for b in _buttons(message) if b["action_id"] == "pare.approve")
            before = standin.count("chat.postEphemeral") + standin.count("response_url")
            status = clicker.click(org.BYSTANDER, data, message, approve)
            _wait_for(
                lambda: standin.count("chat.postEphemeral") + standin.count("response_url") > before
            )
            _say(f"a bystander clicked Approve in #data (HTTP {status}): refused, nothing recorded")
            status = clicker.click(org.CHAMPIONS["data"][0], data, message, approve)
            decisions += 1
            _wait_for(lambda: count_decisions() >= decisions)
            _say(f"data champion clicked Approve (HTTP {status})")
        _wait_for(lambda: standin.count("chat.update") >= decisions)

        _heading("5. Approved removals: a dry run, then applied, then one undone")
        _show_removal(settings, db, client, now)

        _heading("6. Leaderboard")
        outcome = post_leaderboard(settings, db, client, now.strftime("%G-W%V"))
        _say(f"leaderboard: {outcome}")

        _heading("7. What each channel shows")
        _say(standin.transcript())

        _heading("8. What is left for inspection")
        _say(f"decisions recorded: {count_decisions()}")
        _say(f"SQLite file: {workdir / 'pare.db'}")
        _say(f"try: sqlite3 {workdir / 'pare.db'} 'select kind, decided_by from decisions'")
        (workdir / "channels.txt").write_text(standin.transcript())
        (workdir / "scan.txt").write_text(report.summary() + "\n")
        _say(f"transcript: {workdir / 'channels.txt'}")
        if keep_going:
            _say("serving until Ctrl-C ...")
            try:
                import threading

                threading.Event().wait()
            except KeyboardInterrupt:
                pass
        return 0 if report.ok else 1
    finally:
        if server is not None:
            server.stop()
        standin.stop()
        db.engine.dispose()


if __name__ == "__main__":
    sys.exit(run_demo(Path("demo-output")))
