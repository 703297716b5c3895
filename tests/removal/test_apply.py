"""Applying approved removals on moto: each kind, dry run first, exactly the approved set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def _recommend(world: World, document: dict[str, Any]) -> None:
    from models import Finding

    with world.db.session() as session:
        finding = session.scalars(select(Finding).where(Finding.service == "s3")).one()
        arn = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
        finding.detail = {**finding.detail, "recommended_policies": {arn: document}}


def _copy_document(world: World) -> dict[str, Any]:
    [attached] = world.iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]
    meta = world.iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
    version = world.iam.get_policy_version(
        PolicyArn=attached["PolicyArn"], VersionId=meta["DefaultVersionId"]
    )
    return version["PolicyVersion"]["Document"]


RECOMMENDED = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": ["arn:aws:s3:::data", "arn:aws:s3:::data/*"],
        },
        {
            "Effect": "Allow",
            "Action": ["s3-object-lambda:Get*", "s3-object-lambda:List*"],
            "Resource": "*",
        },
    ],
}


def test_access_analyzers_recommended_policy_is_used_when_it_keeps_what_remains(
    world: World,
) -> None:
    from tests.removal.test_crash import aws_managed

    aws_managed(world)
    _recommend(world, RECOMMENDED)

    assert world.apply().results[0].status == "applied"

    assert _copy_document(world) == RECOMMENDED
    assert world.violations == []


def test_a_recommendation_that_takes_more_than_approved_is_not_used(world: World) -> None:
    from tests.removal.test_crash import aws_managed

    aws_managed(world)
    _recommend(world, {**RECOMMENDED, "Statement": RECOMMENDED["Statement"][:1]})

    assert world.apply().results[0].status == "applied"

    assert _copy_document(world) != {**RECOMMENDED, "Statement": RECOMMENDED["Statement"][:1]}
    assert "s3-object-lambda:getobject" in world.grants("role", "reader")
    assert world.violations == []


def _with_analyzer(world: World, tmp_path: Path) -> None:
    from bot.settings import Settings
    from tests.removal.conftest import TEAMS_YAML

    teams = tmp_path / "teams-analyzer.yaml"
    teams.write_text(
        TEAMS_YAML.replace("sources: [last_used]", "sources: [last_used, access_analyzer]"),
        encoding="utf-8",
    )
    world.settings = Settings(DATABASE_URL=world.db.url, PARE_TEAMS_FILE=teams)


def _analyzer(findings: list[dict[str, Any]]) -> tuple[Any, Any]:
    import boto3
    from botocore.stub import Stubber

    analyzer = boto3.client("accessanalyzer", region_name="us-east-1")
    stub = Stubber(analyzer)
    stub.add_response("validate_policy", {"findings": findings})
    stub.activate()
    return analyzer, stub


def test_new_documents_pass_access_analyzers_validation_first(world: World, tmp_path: Path) -> None:
    _with_analyzer(world, tmp_path)
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    error = {
        "findingDetails": "The action s3:Nope does not exist.",
        "findingType": "ERROR",
        "issueCode": "INVALID_ACTION",
        "learnMoreLink": "about:blank",
        "locations": [],
    }
    analyzer, stub = _analyzer([error])

    report = world.apply(analyzers=lambda spec: analyzer)

    [result] = report.results
    stub.assert_no_pending_responses()
    assert result.status == "refused" and "INVALID_ACTION" in (result.reason or "")
    assert world.client is not None and world.client.writes == []


def test_a_document_access_analyzer_accepts_is_applied(world: World, tmp_path: Path) -> None:
    _with_analyzer(world, tmp_path)
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")
    warning = {
        "findingDetails": "Consider narrowing the resource.",
        "findingType": "SUGGESTION",
        "issueCode": "REDUNDANT_ACTION",
        "learnMoreLink": "about:blank",
        "locations": [],
    }
    analyzer, stub = _analyzer([warning])

    report = world.apply(analyzers=lambda spec: analyzer)

    stub.assert_no_pending_responses()
    assert report.results[0].status == "applied", report.summary()


def test_an_account_with_apply_on_changes_aws_without_commit(world: World, tmp_path: Path) -> None:
    from bot.settings import Settings
    from tests.removal.conftest import TEAMS_YAML

    teams = tmp_path / "teams-apply.yaml"
    teams.write_text(TEAMS_YAML.replace("name: sandbox", "name: sandbox\n    apply: true"))
    world.settings = Settings(DATABASE_URL=world.db.url, PARE_TEAMS_FILE=teams)
    _inline_role(world)
    world.approve("app", "unused_permission", "s3")

    report = world.apply(commit=False)

    assert report.results[0].mode == "commit" and report.results[0].status == "applied"
    assert world.client is not None and world.client.writes == ["put_role_policy"]
