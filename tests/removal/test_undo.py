"""Undo, whole or per permission, and each principal's history; both recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from bot.cli import main
from bot.errors import PareError
from bot.removal import ChangeResult, undo_change
from bot.removal.history import history
from tests.removal.conftest import NOW, Crash, World
from tests.removal.test_apply import INLINE, _inline_role
from tests.removal.test_crash import aws_managed, key, new_version, password, quarantine


def _undo(world: World, change_id: int, only: list[str] | None = None) -> ChangeResult:
    return undo_change(world.settings, world.db, change_id, only=only, iam_clients=world.clients())


def _applied(world: World) -> int:
    report = world.apply()
    assert report.results[-1].status == "applied", report.summary()
    return report.results[-1].change_id


def test_a_whole_undo_restores_the_inline_policy_exactly_and_is_recorded(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)

    undo = _undo(world, change_id)

    assert undo.status == "applied" and undo.kind == "undo" and undo.parent_id == change_id
    doc = world.iam.get_role_policy(RoleName="app", PolicyName="work")["PolicyDocument"]
    assert doc == INLINE
    with pytest.raises(PareError, match="already undone"):
        _undo(world, change_id)
    assert world.apply().results == []


def test_undo_only_some_actions_restores_them_with_their_resources_and_conditions(
    world: World,
) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)

    undo = _undo(world, change_id, only=["s3:PutObject"])

    assert undo.status == "applied" and undo.removed == ["s3:putobject"]
    grants = world.grants("role", "app")
    assert "s3:putobject" in grants and "s3:getbucketpolicy" not in grants
    doc = world.iam.get_role_policy(RoleName="app", PolicyName="work")["PolicyDocument"]
    restored = doc["Statement"][-1]
    assert restored["Action"] == "s3:PutObject"
    assert restored["Resource"] == "arn:aws:s3:::data/*" and restored["Condition"]
    with pytest.raises(PareError, match="did not remove"):
        _undo(world, change_id, only=["ec2:RunInstances"])


def test_undo_puts_back_the_aws_managed_policy_and_deletes_the_copy(world: World) -> None:
    aws_managed(world)
    before = world.grants("role", "reader")
    world.floors.clear()
    change_id = _applied(world)

    assert _undo(world, change_id).status == "applied"

    attached = world.iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == ["AmazonS3ReadOnlyAccess"]
    assert world.iam.list_policies(Scope="Local")["Policies"] == []
    assert world.grants("role", "reader") == before


def test_undo_sets_the_earlier_default_version_back(world: World) -> None:
    new_version(world)
    change_id = _applied(world)

    assert _undo(world, change_id).status == "applied"

    assert world.grants("role", "api") == {"dynamodb:getitem", "dynamodb:putitem"}


@pytest.mark.parametrize("scenario", [key, password, quarantine])
def test_undo_reactivates_recreates_or_lifts_the_quarantine(
    world: World, scenario: Callable[[World], Callable[[], None]]
) -> None:
    scenario(world)
    change_id = _applied(world)

    undo = _undo(world, change_id)

    assert undo.status == "applied", undo.line()
    if scenario is key:
        keys = world.iam.list_access_keys(UserName="ci")["AccessKeyMetadata"]
        assert [k["Status"] for k in keys] == ["Active"]
    elif scenario is password:
        assert world.iam.get_login_profile(UserName="ci")["LoginProfile"]
        # moto does not keep the flag; the call that made the profile carried it.
        assert world.client is not None and world.client.writes == ["create_login_profile"]
        assert world.client.params[0]["PasswordResetRequired"] is True
        assert any("reset" in k["why"] for k in undo.kept)
    else:
        assert world.iam.list_role_policies(RoleName="old-job")["PolicyNames"] == []
        assert world.iam.list_role_tags(RoleName="old-job")["Tags"] == []


def test_an_undone_deactivation_is_never_followed_by_deletion(world: World) -> None:
    key(world)
    change_id = _applied(world)
    _undo(world, change_id)

    later = world.apply(now=NOW + timedelta(days=30))

    assert later.results == []
    assert len(world.iam.list_access_keys(UserName="ci")["AccessKeyMetadata"]) == 1


def test_a_deleted_role_comes_back_with_its_policies(world: World) -> None:
    quarantine(world)
    _applied(world)
    world.now = NOW + timedelta(days=15)
    deletion = _applied(world)

    undo = _undo(world, deletion)

    assert undo.status == "applied", undo.line()
    assert world.iam.get_role(RoleName="old-job")["Role"]["Path"] == "/"
    assert world.iam.list_role_policies(RoleName="old-job")["PolicyNames"] == ["PareQuarantine"]


def test_a_role_in_an_instance_profile_is_not_deleted(world: World) -> None:
    quarantine(world)
    _applied(world)
    world.iam.create_instance_profile(InstanceProfileName="web")
    world.iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="old-job")

    report = world.apply(now=NOW + timedelta(days=15))

    [result] = report.results
    assert result.kind == "delete_role" and result.status == "refused"
    assert "instance profile" in (result.reason or "")
    assert world.iam.get_role(RoleName="old-job")


def test_history_tells_finding_decision_change_and_undo_in_order(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)
    _undo(world, change_id, only=["s3:PutObject"])
    arn = "arn:aws:iam::123456789012:role/app"

    events = history(world.db, arn)
    monkeypatch.setenv("DATABASE_URL", world.db.url)
    monkeypatch.setenv("PARE_TEAMS_FILE", str(world.settings.teams_file))
    assert main(["history", "--principal", arn, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)

    kinds = [e["type"] for e in events]
    assert kinds[0] == "finding_opened" and "decision" in kinds
    assert kinds.index("decision") < kinds.index("change") < kinds.index("undo")
    statuses = [e["status"] for e in events if e["type"] == "change"]
    assert statuses == ["planned", "before_state_saved", "applying", "applied"]
    assert printed == events
    assert main(["history", "--principal", arn]) == 0
    assert f"undo {change_id + 1} of change {change_id}: applied" in capsys.readouterr().out


@pytest.mark.parametrize("crash_after", [1, 2, 3])
def test_an_undo_cut_short_by_a_crash_is_finished_by_the_next_apply(
    world: World, crash_after: int
) -> None:
    aws_managed(world)
    before = world.grants("role", "reader")
    world.floors.clear()
    change_id = _applied(world)

    with pytest.raises(Crash):
        undo_change(world.settings, world.db, change_id, iam_clients=world.clients(crash_after))
    resumed = world.apply()

    [undo] = resumed.results
    assert undo.kind == "undo" and undo.status == "applied", resumed.summary()
    assert world.grants("role", "reader") == before
    assert world.iam.list_policies(Scope="Local")["Policies"] == []
