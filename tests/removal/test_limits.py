"""IAM limits are checked before any call: compacted to fit, or refused with the reason."""

from __future__ import annotations

import json
import re

import pytest

from bot.catalog import catalogue
from bot.cli import main
from bot.removal import policy as P
from bot.removal import service
from tests.removal.conftest import AS_OF, World
from tests.removal.test_crash import aws_managed

EVERYTHING_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def _wide(world: World, kind: str) -> None:
    used = {"s3:GetObject"}
    if kind == "role":
        world.role("wide", used=used)
        world.iam.put_role_policy(
            RoleName="wide", PolicyName="all", PolicyDocument=json.dumps(EVERYTHING_S3)
        )
    else:
        world.iam.create_user(UserName="wide")
        world.used["arn:aws:iam::123456789012:user/wide"] = {a.lower() for a in used}
        world.iam.put_user_policy(
            UserName="wide", PolicyName="all", PolicyDocument=json.dumps(EVERYTHING_S3)
        )
    world.scan()
    world.approve("wide", "unused_permission", "s3")


def test_a_wildcard_expanded_past_the_limit_is_compacted_to_fit(world: World) -> None:
    _wide(world, "role")
    before = world.grants("role", "wide")

    report = world.apply()

    [result] = report.results
    assert result.status == "applied", report.summary()
    doc = world.iam.get_role_policy(RoleName="wide", PolicyName="all")["PolicyDocument"]
    assert P.size(doc) <= P.INLINE_LIMITS["role"]
    assert world.grants("role", "wide") == before - {a.lower() for a in result.removed}
    assert world.grants("role", "wide") & {"s3:getobject"}


def test_a_change_that_cannot_fit_is_refused_before_any_call(world: World) -> None:
    # One unused action of every verb: no wildcard can be kept, so the ~170 kept s3 actions
    # must be listed one by one, far past a user's 2,048 characters.
    actions = catalogue().actions("s3")
    first_of_verb: dict[str, str] = {}
    for action in actions:
        verb = re.match(r"[A-Z][a-z]+", action.partition(":")[2])
        first_of_verb.setdefault(verb.group(0) if verb else action, action)
    unused = {a.lower() for a in first_of_verb.values()}
    world.iam.create_user(UserName="wide")
    world.used["arn:aws:iam::123456789012:user/wide"] = {a.lower() for a in actions} - unused
    world.iam.put_user_policy(
        UserName="wide", PolicyName="all", PolicyDocument=json.dumps(EVERYTHING_S3)
    )
    world.scan()
    world.approve("wide", "unused_permission", "s3")
    before = world.grants("user", "wide")

    report = world.apply()

    [result] = report.results
    assert result.status == "refused", report.summary()
    assert "over IAM's 2048 for a user, even compacted" in (result.reason or "")
    assert world.client is not None and world.client.writes == []
    assert world.grants("user", "wide") == before


def test_ten_managed_policies_leave_no_room_for_a_copy(world: World) -> None:
    aws_managed(world)
    world.floors.clear()
    for n in range(9):
        arn = world.iam.create_policy(PolicyName=f"p{n}", PolicyDocument=json.dumps(EVERYTHING_S3))[
            "Policy"
        ]["Arn"]
        world.iam.attach_role_policy(RoleName="reader", PolicyArn=arn)

    report = world.apply()

    [result] = report.results
    assert result.status == "refused" and "10 managed policies" in (result.reason or "")
    assert world.client is not None and world.client.writes == []


def test_pare_apply_prints_the_dry_run(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_managed(world)
    monkeypatch.setattr(service, "_default_reader", world.reader)
    monkeypatch.setattr(service, "_default_clients", world.clients())
    monkeypatch.setenv("DATABASE_URL", world.db.url)
    monkeypatch.setenv("PARE_TEAMS_FILE", str(world.settings.teams_file))

    code = main(["apply", "--as-of", AS_OF.date().isoformat()])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "[dry_run] trim_permissions arn:aws:iam::123456789012:role/reader" in out
    assert "would: create_policy" in out and "would: detach reader" in out
    assert world.client is not None and world.client.writes == []
