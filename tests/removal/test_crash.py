"""Crash safety: a failure after every AWS write of every kind of change, then `pare apply` again.

After each write the principal must still hold all that was approved to remain; the re-run
must finish the change; every event recorded before the crash must still be there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from models import Change, ChangeEvent, Decision
from tests.removal.conftest import NOW, World
from tests.removal.test_apply import _inline_role

DOC = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": "*"}
    ],
}


def inline(world: World) -> Callable[[], None]:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    floor = {a for a in world.grants("role", "app") if not a.startswith("s3:")}
    world.keep_at_least("role", "app", floor | {"s3:getobject"})

    def final() -> None:
        assert world.grants("role", "app") == floor | {"s3:getobject"}

    return final


def shared_copy(world: World) -> Callable[[], None]:
    world.role("api", used={"dynamodb:GetItem"})
    world.role("worker", used={"dynamodb:GetItem", "dynamodb:PutItem"})
    arn = world.iam.create_policy(PolicyName="tables", PolicyDocument=json.dumps(DOC))
    for role in ("api", "worker"):
        world.iam.attach_role_policy(RoleName=role, PolicyArn=arn["Policy"]["Arn"])
    world.scan()
    world.approve("api", "unused_permission", "dynamodb")
    world.keep_at_least("role", "worker", {"dynamodb:getitem", "dynamodb:putitem"})
    world.keep_at_least("role", "api", {"dynamodb:getitem"})

    def final() -> None:
        assert world.grants("role", "api") == {"dynamodb:getitem"}
        attached = world.iam.list_attached_role_policies(RoleName="api")["AttachedPolicies"]
        assert len(attached) == 1

    return final


def new_version(world: World) -> Callable[[], None]:
    world.role("api", used={"dynamodb:GetItem"})
    arn = world.iam.create_policy(PolicyName="tables", PolicyDocument=json.dumps(DOC))
    arn = arn["Policy"]["Arn"]
    for n in range(4):
        doc = {**DOC, "Statement": [{**DOC["Statement"][0], "Sid": f"V{n}"}]}
        world.iam.create_policy_version(
            PolicyArn=arn, PolicyDocument=json.dumps(doc), SetAsDefault=True
        )
    world.iam.attach_role_policy(RoleName="api", PolicyArn=arn)
    world.scan()
    world.approve("api", "unused_permission", "dynamodb")
    world.keep_at_least("role", "api", {"dynamodb:getitem"})

    def final() -> None:
        assert world.grants("role", "api") == {"dynamodb:getitem"}
        assert len(world.iam.list_policy_versions(PolicyArn=arn)["Versions"]) == 5

    return final


def aws_managed(world: World) -> Callable[[], None]:
    world.role("reader", used={"s3:GetObject", "s3:ListBucket"})
    readonly = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
    world.iam.attach_role_policy(RoleName="reader", PolicyArn=readonly)
    world.scan()
    world.approve("reader", "unused_permission", "s3")
    before = world.grants("role", "reader")
    floor = {a for a in before if not a.startswith("s3:")} | {"s3:getobject", "s3:listbucket"}
    world.keep_at_least("role", "reader", floor)

    def final() -> None:
        assert world.grants("role", "reader") == floor

    return final


def key(world: World) -> Callable[[], None]:
    world.iam.create_user(UserName="ci")
    world.iam.create_access_key(UserName="ci")
    world.scan()
    world.approve("ci", "unused_access_key")

    def final() -> None:
        keys = world.iam.list_access_keys(UserName="ci")["AccessKeyMetadata"]
        assert [k["Status"] for k in keys] == ["Inactive"]

    return final


def password(world: World) -> Callable[[], None]:
    world.iam.create_user(UserName="ci")
    world.iam.create_login_profile(UserName="ci", Password="Not-a-real-1!")
    world.scan()
    world.approve("ci", "unused_password")

    def final() -> None:
        with pytest.raises(world.iam.exceptions.NoSuchEntityException):
            world.iam.get_login_profile(UserName="ci")

    return final


def quarantine(world: World) -> Callable[[], None]:
    world.role("old-job", in_use=False)
    world.scan()
    world.approve("old-job", "unused_role")

    def final() -> None:
        assert world.iam.list_role_policies(RoleName="old-job")["PolicyNames"] == ["PareQuarantine"]

    return final


def key_deletion(world: World) -> Callable[[], None]:
    key(world)
    assert world.apply().results[0].status == "applied"
    world.now = NOW + timedelta(days=15)

    def final() -> None:
        assert world.iam.list_access_keys(UserName="ci")["AccessKeyMetadata"] == []

    return final


def role_deletion(world: World) -> Callable[[], None]:
    quarantine(world)
    assert world.apply().results[0].status == "applied"
    world.now = NOW + timedelta(days=15)

    def final() -> None:
        assert "old-job" not in {r["RoleName"] for r in world.iam.list_roles()["Roles"]}

    return final


SCENARIOS = {
    "inline": (inline, 1),
    "shared_copy": (shared_copy, 3),
    "new_version": (new_version, 2),
    "aws_managed": (aws_managed, 3),
    "key": (key, 1),
    "password": (password, 1),
    "quarantine": (quarantine, 2),
    "key_deletion": (key_deletion, 1),
    "role_deletion": (role_deletion, 2),
}
CASES = [(name, k) for name, (_, writes) in SCENARIOS.items() for k in range(1, writes + 1)]


def _events(world: World) -> list[tuple[int, int, str, int]]:
    with world.db.session() as session:
        rows = session.scalars(select(ChangeEvent).order_by(ChangeEvent.id))
        return [(e.id, e.change_id, e.status, e.step) for e in rows]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_kind_makes_the_writes_counted_here(world: World, name: str) -> None:
    setup, writes = SCENARIOS[name]
    final = setup(world)

    report = world.apply(now=world.now)

    assert world.client is not None and len(world.client.writes) == writes, world.client.writes
    assert report.results[-1].status == "applied", report.summary()
    assert world.violations == []
    final()


@pytest.mark.parametrize(("name", "crash_after"), CASES)
def test_a_crash_after_any_write_is_finished_by_the_next_run(
    world: World, name: str, crash_after: int
) -> None:
    setup, _ = SCENARIOS[name]
    final = setup(world)
    now = world.now
    with world.db.session() as session:
        decisions = [(d.id, d.kind, d.frozen) for d in session.scalars(select(Decision))]

    crashed = world.apply(crash_after=crash_after, now=now)
    recorded = _events(world)
    resumed = world.apply(now=now)

    assert any("interrupted (Crash)" in p for p in crashed.problems), crashed.summary()
    assert crashed.results[-1].status == "applying"
    assert world.violations == []
    assert resumed.results[0].status == "applied", resumed.summary()
    assert resumed.results[0].change_id == crashed.results[-1].change_id
    final()
    assert _events(world)[: len(recorded)] == recorded
    with world.db.session() as session:
        assert [(d.id, d.kind, d.frozen) for d in session.scalars(select(Decision))] == decisions
        assert session.scalar(select(Change).where(Change.status == "applying")) is None


def test_a_refusal_half_way_rolls_back_and_a_crash_in_the_rollback_is_finished(
    world: World,
) -> None:
    final = aws_managed(world)
    before = world.grants("role", "reader")
    from bot.removal import apply_approved

    client = world.clients(crash_after=3)
    assert world.client is not None
    world.client.refuse["detach_role_policy"] = (
        "UnmodifiableEntity",
        {"PolicyArn": "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"},
    )
    # Writes: create_policy, attach (copy), then detach refused; rollback detaches the copy
    # (write 3: crash) and deletes it.
    report = apply_approved(
        world.settings,
        world.db,
        commit=True,
        reader=world.reader,
        iam_clients=client,
        as_of=NOW + timedelta(days=200),
        now=NOW,
    )
    assert report.results[0].status == "rolling_back", report.summary()
    assert world.violations == []

    again = world.apply()

    [result] = again.results
    assert result.status == "rolled_back", again.summary()
    assert result.reason and "UnmodifiableEntity" in result.reason
    assert world.grants("role", "reader") == before
    attached = world.iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == ["AmazonS3ReadOnlyAccess"]
    assert world.iam.list_policies(Scope="Local")["Policies"] == []
    del final


def test_a_refusal_at_the_first_write_is_recorded_and_not_retried(world: World) -> None:
    inline(world)
    client = world.clients()
    assert world.client is not None
    world.client.refuse["put_role_policy"] = ("LimitExceeded", {})
    from bot.removal import apply_approved

    report = apply_approved(
        world.settings,
        world.db,
        commit=True,
        reader=world.reader,
        iam_clients=client,
        as_of=NOW + timedelta(days=200),
        now=NOW,
    )
    again = world.apply()

    [result] = report.results
    assert result.status == "refused" and "LimitExceeded" in (result.reason or "")
    assert "put_inline on app policy" in (result.reason or "") or "app" in (result.reason or "")
    assert again.results == [] and world.client.writes == []
