"""Undo, whole or per permission, and each principal's history; both recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.errors import PareError
from bot.removal import ChangeResult, undo_change
from bot.removal.history import history
from models import Change
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

    assert undo.status == "applied" and undo.removed == ["s3:PutObject"]
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


class _Together:
    """An IAM client that holds each caller at its first read until both have read.

    Both undos then plan from the same database picture before either records itself, which
    is the race the claim must settle: without it, both would go ahead.
    """

    def __init__(self, client: Any, barrier: threading.Barrier):
        self._client = client
        self._barrier = barrier
        self._waited = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name != "get_role" or self._waited:
            return attr
        self._waited = True
        self._barrier.wait(timeout=30)
        return attr


def _undos(world: World) -> list[Change]:
    with world.db.session() as session:
        return list(session.scalars(select(Change).where(Change.kind == "undo")))


@pytest.mark.parametrize("scenario", ["inline", "aws_managed"])
def test_two_undo_clicks_at_the_same_moment_make_one_undo(world: World, scenario: str) -> None:
    if scenario == "inline":
        _inline_role(world)
        world.approve("app", "unused_permission", "s3")
    else:
        aws_managed(world)
        world.floors.clear()
    change_id = _applied(world)
    barrier = threading.Barrier(2)
    done: list[ChangeResult] = []
    told: list[str] = []

    def click(user: str) -> None:
        client = _Together(world.iam, barrier)
        try:
            done.append(
                undo_change(
                    world.settings, world.db, change_id, user=user, iam_clients=lambda _: client
                )
            )
        except PareError as exc:
            told.append(str(exc))

    threads = [threading.Thread(target=click, args=(u,)) for u in ("U0ALICE01", "U0BOB0002")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    [undo] = _undos(world)
    assert [r.change_id for r in done] == [undo.id] and done[0].status == "applied"
    [message] = told
    assert f"change {change_id}" in message and f"undone by change {undo.id}" in message
    assert str(undo.requested_by) in message and str(undo.created_at.year) in message
    with world.db.session() as session:
        assert session.get_one(Change, change_id).undo_seq == 1


def test_a_second_undo_is_told_who_undid_the_change_and_when(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)
    undo_change(world.settings, world.db, change_id, user="U0ALICE01", iam_clients=world.clients())

    with pytest.raises(PareError, match=r"already undone by change \d+, asked by U0ALICE01 at"):
        _undo(world, change_id)


def test_an_undo_still_running_blocks_another(world: World) -> None:
    aws_managed(world)
    world.floors.clear()
    change_id = _applied(world)
    with pytest.raises(Crash):
        undo_change(
            world.settings, world.db, change_id, user="U0ALICE01", iam_clients=world.clients(1)
        )

    with pytest.raises(PareError, match="is already being undone by change .* U0ALICE01"):
        _undo(world, change_id)
    assert len(_undos(world)) == 1


def test_partial_undos_compose_and_the_rest_restores_the_original_exactly(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)
    first = _undo(world, change_id, only=["s3:PutObject"])

    with pytest.raises(PareError, match="s3:PutObject was already restored by change"):
        _undo(world, change_id, only=["s3:PutObject"])
    rest = _undo(world, change_id)

    assert first.status == rest.status == "applied"
    assert "s3:PutObject" not in rest.removed and "s3:GetBucketPolicy" in rest.removed
    doc = world.iam.get_role_policy(RoleName="app", PolicyName="work")["PolicyDocument"]
    assert doc == INLINE
    with pytest.raises(PareError, match=f"change {change_id} was already undone"):
        _undo(world, change_id)


def test_partial_undos_of_an_aws_managed_copy_compose(world: World) -> None:
    aws_managed(world)
    before = world.grants("role", "reader")
    world.floors.clear()
    change_id = _applied(world)

    assert _undo(world, change_id, only=["s3:GetBucketPolicy"]).status == "applied"
    assert "s3:getbucketpolicy" in world.grants("role", "reader")
    assert _undo(world, change_id).status == "applied"

    attached = world.iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == ["AmazonS3ReadOnlyAccess"]
    assert world.iam.list_policies(Scope="Local")["Policies"] == []
    assert world.grants("role", "reader") == before


def _delete_copies(world: World) -> None:
    for policy in world.iam.list_policies(Scope="Local")["Policies"]:
        world.iam.detach_role_policy(RoleName="reader", PolicyArn=policy["Arn"])
        world.iam.delete_policy(PolicyArn=policy["Arn"])


def test_undo_after_the_trimmed_copy_was_deleted_outside_pare_attaches_the_original(
    world: World,
) -> None:
    aws_managed(world)
    before = world.grants("role", "reader")
    world.floors.clear()
    change_id = _applied(world)
    _delete_copies(world)

    undo = _undo(world, change_id)

    assert undo.status == "applied", undo.line()
    assert any("deleted outside Pare" in k["why"] for k in undo.kept)
    assert "deleted outside Pare" in undo.line()
    assert world.grants("role", "reader") == before
    [stored] = _undos(world)
    assert any("deleted outside Pare" in k["why"] for k in stored.kept)


def test_a_partial_undo_after_the_copy_was_deleted_restores_only_what_was_asked(
    world: World,
) -> None:
    aws_managed(world)
    world.floors.clear()
    change_id = _applied(world)
    _delete_copies(world)

    undo = _undo(world, change_id, only=["s3:GetBucketPolicy"])

    assert undo.status == "applied", undo.line()
    assert world.grants("role", "reader") == {"s3:getbucketpolicy"}
    assert any("undo the whole change" in k["why"] for k in undo.kept)
    assert _undo(world, change_id).status == "applied"
    attached = world.iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == ["AmazonS3ReadOnlyAccess"]


def test_undo_of_a_principal_deleted_outside_pare_is_recorded_as_refused(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)
    world.iam.delete_role_policy(RoleName="app", PolicyName="work")
    world.iam.delete_role(RoleName="app")

    undo = _undo(world, change_id)

    assert undo.status == "refused" and "NoSuchEntity" in (undo.reason or "")
    assert [u.status for u in _undos(world)] == ["refused"]


def test_the_command_line_explains_bad_ids_and_says_what_an_undo_restores(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    change_id = _applied(world)
    monkeypatch.setenv("DATABASE_URL", world.db.url)
    monkeypatch.setenv("PARE_TEAMS_FILE", str(world.settings.teams_file))
    # An earlier test's `main` left logging on its own, now closed, stream: drop that noise.
    capsys.readouterr()

    for bad in (str(2**63), "-1", "0"):
        assert main(["undo", bad]) == 2
        assert capsys.readouterr().err == f"pare: no change {bad}\n"
    assert main(["apply", "--account", "not-an-id"]) == 2
    assert "not a 12-digit AWS account id" in capsys.readouterr().err
    assert main(["apply", "--account", "999999999999"]) == 2
    assert "999999999999 is not configured" in capsys.readouterr().err

    monkeypatch.setattr("bot.removal.service._default_clients", world.clients())
    assert main(["undo", str(change_id), "--only", "s3:PutObject"]) == 0
    printed = capsys.readouterr().out
    assert "restores: s3:PutObject" in printed and "removes:" not in printed
