"""Principals from exported `get-account-authorization-details` JSON: the real snapshots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bot.aws.export import ExportError, build_principals, load_export
from bot.domain import PrincipalRecord

CLOUDSPLAINING = "aws_api_responses/cloudsplaining-examples/example.json"
AIRIAM = "aws_api_responses/airiam/iam_data.json"
Principals = dict[str, PrincipalRecord]


@pytest.fixture
def cloudsplaining(realdata: Path) -> Principals:
    return {p.name: p for p in load_export(realdata / CLOUDSPLAINING)}


def test_every_role_and_user_of_the_cloudsplaining_account(cloudsplaining: Principals) -> None:
    kinds = Counter(p.kind for p in cloudsplaining.values())
    service_linked = [p for p in cloudsplaining.values() if p.path.startswith("/aws-service-role/")]

    assert kinds == {"role": 78, "user": 44}
    assert len(service_linked) == 8
    assert all(not p.read_problems for p in cloudsplaining.values())


def test_group_policies_reach_their_members(cloudsplaining: Principals) -> None:
    user = cloudsplaining["privesc-sre-user"]
    (policy,) = user.policies

    assert user.groups == ["privesc-sre-group"]
    assert (policy.name, policy.origin, policy.group) == (
        "privesc-sre-admin-policy",
        "group_managed",
        "privesc-sre-group",
    )


def test_managed_policies_carry_their_default_version_and_blast_radius(
    cloudsplaining: Principals,
) -> None:
    holders = [
        p for p in cloudsplaining.values() for pol in p.policies if pol.name == "fn1-passrole-star"
    ]
    policy = next(pol for pol in holders[0].policies if pol.name == "fn1-passrole-star")

    assert policy.version_id == "v1" and policy.origin == "managed"
    assert policy.document["Statement"]
    assert len(policy.attached_to) == len(holders) - 1
    assert holders[0].arn not in policy.attached_to


def test_aws_managed_policies_are_marked_as_such(cloudsplaining: Principals) -> None:
    origins = Counter(pol.origin for p in cloudsplaining.values() for pol in p.policies)

    assert origins["aws_managed"] == 17
    assert origins["inline"] == 38


def test_role_last_used_is_read_and_user_credentials_are_unknown(
    cloudsplaining: Principals,
) -> None:
    role = cloudsplaining["AWS-QuickSetup-EnableCRecording-1clff_ap-northeast-1"]
    users = [p for p in cloudsplaining.values() if p.kind == "user"]

    assert role.last_used_at is not None and role.last_used_at.year == 2022
    assert role.last_used_region == "us-east-1"
    # A plain export lists no keys or passwords: their use is unknown, not "none".
    assert all(not u.last_used_known for u in users)


def test_the_airiam_snapshot_with_its_credential_report(realdata: Path) -> None:
    records = {p.name: p for p in load_export(realdata / AIRIAM)}
    user = records["user7@example.com"]
    billing = next(p for p in user.policies if p.name == "Billing")

    assert Counter(p.kind for p in records.values()) == {"role": 8, "user": 5}
    assert billing.version_id == "v2" and billing.origin == "group_managed"
    assert "cur:*" in billing.document["Statement"][0]["Action"]
    assert [k.last_used_service for k in user.access_keys] == ["sts"]
    assert user.login_profile is not None
    assert user.login_profile.last_used_at.isoformat().startswith("2019-08-15")
    assert user.last_used_known


def test_boundary_is_kept_apart_and_missing_policies_fail_the_principal_closed() -> None:
    details = {
        "RoleDetailList": [
            {
                "RoleName": "bounded",
                "Arn": "arn:aws:iam::111122223333:role/bounded",
                "Path": "/",
                "CreateDate": "2020-01-01T00:00:00Z",
                "RolePolicyList": [
                    {"PolicyName": "inline", "PolicyDocument": "%7B%22Statement%22%3A%5B%5D%7D"}
                ],
                "AttachedManagedPolicies": [
                    {"PolicyName": "gone", "PolicyArn": "arn:aws:iam::111122223333:policy/gone"}
                ],
                "PermissionsBoundary": {
                    "PermissionsBoundaryType": "Policy",
                    "PermissionsBoundaryArn": "arn:aws:iam::111122223333:policy/boundary",
                },
                "RoleLastUsed": {},
            }
        ],
        "Policies": [],
    }
    (role,) = build_principals(details)

    assert role.boundary_arn == "arn:aws:iam::111122223333:policy/boundary"
    assert [p.name for p in role.policies] == ["inline"]
    assert role.policies[0].document == {"Statement": []}
    assert "policy/gone" in role.read_problems[0]
    assert role.last_used_known and role.last_used_at is None


def test_a_file_that_is_not_an_export_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"Records": []}))

    with pytest.raises(ExportError, match="other.json"):
        load_export(path)


def test_a_managed_policy_version_younger_than_the_window_makes_its_grants_too_new(
    cloudsplaining: Principals,
) -> None:
    from datetime import timedelta

    from bot.analysis import analyze_principal
    from bot.domain import UsageEvidence
    from bot.teams import Exclusions

    shared = [
        (p, policy)
        for p in cloudsplaining.values()
        for policy in p.policies
        if policy.origin in ("managed", "aws_managed") and policy.attached_at
    ]
    principal, policy = shared[0]
    # Judge just after the default version was written, with evidence showing no use at all.
    as_of = policy.attached_at + timedelta(days=30)
    principal.created_at = as_of - timedelta(days=400)
    principal.last_used_at = as_of
    principal.policies = [policy]
    evidence = UsageEvidence("cloudtrail", as_of - timedelta(days=200), as_of, as_of)
    result = analyze_principal(
        principal, [evidence], as_of=as_of, window_days=90, exclusions=Exclusions()
    )

    assert {f.status for f in result.findings} == {"too_new"}
    a_year_on = as_of + timedelta(days=365)
    later = analyze_principal(
        principal,
        [UsageEvidence("cloudtrail", as_of, a_year_on, a_year_on)],
        as_of=a_year_on,
        window_days=90,
        exclusions=Exclusions(),
    )
    assert "unused" in {f.status for f in later.findings}
