"""Applying approved removals on moto: each kind, dry run first, exactly the approved set."""

from __future__ import annotations

import json

from sqlalchemy import select

from models import Change, ChangeEvent
from tests.removal.conftest import World

INLINE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Objects",
            "Effect": "Allow",
            "Action": ["s3:Get*", "s3:PutObject"],
            "Resource": "arn:aws:s3:::data/*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}},
        },
        {"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:ReceiveMessage"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
    ],
}


def _inline_role(world: World) -> None:
    world.role("app", used={"s3:GetObject", "sqs:ReceiveMessage"})
    world.iam.put_role_policy(RoleName="app", PolicyName="work", PolicyDocument=json.dumps(INLINE))
    world.scan()


def test_a_dry_run_records_and_changes_nothing(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    before = world.grants("role", "app")

    report = world.apply(commit=False)
    again = world.apply(commit=False)

    assert world.client is not None and world.client.writes == []
    assert world.grants("role", "app") == before
    [result] = report.results
    assert result.mode == "dry_run" and result.status == "dry_run"
    assert "s3:PutObject" in result.removed and "s3:GetObject" not in result.removed
    assert "would: put_inline app work" in report.summary()
    assert [r.change_id for r in again.results] == [result.change_id]


def test_an_inline_policy_loses_only_the_approved_actions(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    before = world.grants("role", "app")

    report = world.apply()

    [result] = report.results
    assert result.status == "applied", report.summary()
    doc = world.iam.get_role_policy(RoleName="app", PolicyName="work")["PolicyDocument"]
    objects, queues, deny = doc["Statement"]
    assert objects["Action"] == "s3:GetObject"
    assert objects["Resource"] == "arn:aws:s3:::data/*" and objects["Condition"]
    assert objects["Sid"] == "Objects"
    assert queues == INLINE["Statement"][1] and deny == INLINE["Statement"][2]
    after = world.grants("role", "app")
    assert before - after == {a.lower() for a in result.removed}
    assert "sqs:sendmessage" in after


def test_anything_used_since_the_decision_is_left_and_reported(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    world.used["arn:aws:iam::123456789012:role/app"].add("s3:putobject")

    report = world.apply()

    [result] = report.results
    assert result.status == "applied"
    assert "s3:PutObject" not in result.removed
    assert {
        "what": "s3:PutObject",
        "why": "used since the decision, or no longer provably unused",
    } in result.kept
    assert "s3:putobject" in world.grants("role", "app")


def test_a_shared_managed_policy_becomes_a_trimmed_copy_for_the_one_who_approved(
    world: World,
) -> None:
    world.role("api", used={"dynamodb:GetItem"})
    world.role("worker", used={"dynamodb:GetItem", "dynamodb:PutItem"})
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": "*"}
        ],
    }
    arn = world.iam.create_policy(PolicyName="tables", PolicyDocument=json.dumps(doc))["Policy"][
        "Arn"
    ]
    for role in ("api", "worker"):
        world.iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    world.scan()
    world.approve("api", "unused_permission", "dynamodb")
    world.keep_at_least("role", "worker", {"dynamodb:getitem", "dynamodb:putitem"})
    world.keep_at_least("role", "api", {"dynamodb:getitem"})

    report = world.apply()

    [result] = report.results
    assert result.status == "applied", report.summary()
    assert world.client is not None
    assert world.client.writes == ["create_policy", "attach_role_policy", "detach_role_policy"]
    assert world.violations == []
    assert world.grants("role", "api") == {"dynamodb:getitem"}
    assert world.grants("role", "worker") == {"dynamodb:getitem", "dynamodb:putitem"}
    versions = world.iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert len(versions) == 1


def test_an_unshared_managed_policy_gets_a_new_default_version_within_five(world: World) -> None:
    world.role("api", used={"dynamodb:GetItem"})
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": "*"}
        ],
    }
    arn = world.iam.create_policy(PolicyName="tables", PolicyDocument=json.dumps(doc))["Policy"][
        "Arn"
    ]
    for n in range(4):
        doc["Statement"][0]["Sid"] = f"V{n}"
        world.iam.create_policy_version(
            PolicyArn=arn, PolicyDocument=json.dumps(doc), SetAsDefault=True
        )
    world.iam.attach_role_policy(RoleName="api", PolicyArn=arn)
    world.scan()
    world.approve("api", "unused_permission", "dynamodb")

    report = world.apply()

    [result] = report.results
    assert result.status == "applied", report.summary()
    assert world.client is not None
    assert world.client.writes == ["delete_policy_version", "create_policy_version"]
    versions = world.iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert len(versions) == 5 and "v1" not in {v["VersionId"] for v in versions}
    assert world.grants("role", "api") == {"dynamodb:getitem"}
    with world.db.session() as session:
        change = session.get_one(Change, result.change_id)
        kept = change.before_state["managed"][arn]["versions"]
    assert {v["id"] for v in kept} == {"v1", "v2", "v3", "v4", "v5"}


def test_an_aws_managed_policy_is_replaced_by_a_trimmed_copy(world: World) -> None:
    world.role("reader", used={"s3:GetObject", "s3:ListBucket"})
    readonly = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
    world.iam.attach_role_policy(RoleName="reader", PolicyArn=readonly)
    world.scan()
    world.approve("reader", "unused_permission", "s3")
    keep = {"s3:getobject", "s3:listbucket"}
    world.keep_at_least("role", "reader", keep)

    report = world.apply()

    [result] = report.results
    assert result.status == "applied", report.summary()
    attached = world.iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]
    assert [a["PolicyArn"] for a in attached] != [readonly]
    assert len(attached) == 1 and "/pare/" in attached[0]["PolicyArn"]
    assert keep <= world.grants("role", "reader")
    assert not any(a.startswith("s3:") and a not in keep for a in world.grants("role", "reader"))
    assert world.violations == []


def test_keys_passwords_and_roles(world: World) -> None:
    world.iam.create_user(UserName="ci")
    key = world.iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    world.iam.create_login_profile(UserName="ci", Password="Not-a-real-1!")
    world.role("old-job", in_use=False)
    world.scan()
    world.approve("ci", "unused_access_key")
    world.approve("ci", "unused_password")
    world.approve("old-job", "unused_role")

    report = world.apply()

    statuses = {r.kind: r.status for r in report.results}
    assert statuses == {
        "deactivate_access_key": "applied",
        "delete_login_profile": "applied",
        "quarantine_role": "applied",
    }, report.summary()
    keys = world.iam.list_access_keys(UserName="ci")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key, "Inactive")]
    assert "PareQuarantine" in world.iam.list_role_policies(RoleName="old-job")["PolicyNames"]
    tags = world.iam.list_role_tags(RoleName="old-job")["Tags"]
    assert [t["Key"] for t in tags] == ["pare:quarantined"]


def test_every_transition_is_kept(world: World) -> None:
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    world.apply()

    with world.db.session() as session:
        events = [e.status for e in session.scalars(select(ChangeEvent).order_by(ChangeEvent.id))]
    assert events == ["planned", "before_state_saved", "applying", "applied"]
