"""Principals from exported `get-account-authorization-details` JSON: the real snapshots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bot.aws.export import ExportError, build_principals, load_export
from bot.cli import main
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


ROLE_ARN = "arn:aws:iam::111122223333:role/r"
USER_ARN = "arn:aws:iam::111122223333:user/u"


def _role(**fields: object) -> dict:
    role = {
        "RoleName": "r",
        "Arn": ROLE_ARN,
        "Path": "/",
        "CreateDate": "2020-01-01T00:00:00Z",
        "RolePolicyList": [
            {
                "PolicyName": "p",
                "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "*"}]},
            }
        ],
        "AttachedManagedPolicies": [],
        "Tags": [],
    }
    role.update(fields)
    return role


def _analyze(capsys, tmp_path: Path, export: dict) -> tuple[int, list[dict], str]:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    code = main(
        ["analyze", "--json", "--authorization-details", str(path), "--as-of", "2026-12-01"]
    )
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else [], out.err


@pytest.mark.parametrize(
    "last_used",
    [
        {"LastUsedDate": "not-a-date"},
        {"LastUsedDate": "2026-13-45T00:00:00Z"},
        {"LastUsedDate": 1700000000},
        "yesterday",
    ],
)
def test_an_unreadable_role_last_used_is_unknown_not_never_used(capsys, tmp_path, last_used):
    code, rows, _ = _analyze(capsys, tmp_path, {"RoleDetailList": [_role(RoleLastUsed=last_used)]})

    assert code == 0
    assert [(r["kind"], r["status"]) for r in rows] == [("unused_role", "unknown")]
    assert "RoleLastUsed" in rows[0]["reason"] and "Never used" not in rows[0]["reason"]


def test_unreadable_credential_report_dates_are_unknown_not_never_used(capsys, tmp_path):
    user = {"UserName": "u", "Arn": USER_ARN, "CreateDate": "2020-01-01T00:00:00Z"}
    row = {
        "user": "u",
        "arn": USER_ARN,
        "password_enabled": "true",
        "password_last_changed": "2020-01-01T00:00:00+00:00",
        "password_last_used": "garbage",
        "access_key_1_active": "true",
        "access_key_1_last_rotated": "2020-01-01T00:00:00+00:00",
        "access_key_1_last_used_date": "13/45/2026",
    }
    export = {"UserDetailList": [user], "CredentialReport": [row]}
    code, rows, _ = _analyze(capsys, tmp_path, export)

    assert code == 0 and rows and all(r["status"] == "unknown" for r in rows)
    assert "access_key_1_last_used_date '13/45/2026' is not a date" in rows[0]["reason"]
    assert "password_last_used 'garbage' is not a date" in rows[0]["reason"]


@pytest.mark.parametrize(
    ("export", "named"),
    [
        ({"RoleDetailList": [{"RoleName": "x"}]}, "RoleDetailList[0] (x) has no Arn"),
        ({"RoleDetailList": ["x", 5]}, "RoleDetailList[0] is not an object"),
        ({"RoleDetailList": "abc"}, "RoleDetailList is not a list"),
        ({"RoleDetailList": [_role(Tags=["Key"])]}, "(r) Tags[0] is not an object"),
        (
            {"RoleDetailList": [_role(AttachedManagedPolicies=[{"PolicyName": "x"}])]},
            "(r) AttachedManagedPolicies[0] has no PolicyArn",
        ),
        (
            {"UserDetailList": [{"UserName": "u", "Arn": USER_ARN, "GroupList": [{"a": 1}]}]},
            "(u) GroupList is not a list of group names",
        ),
        ({"RoleDetailList": [_role()], "Policies": ["junk"]}, "Policies[0] is not an object"),
        ({"RoleDetailList": [], "CredentialReport": ["x"]}, "CredentialReport[0] is not an object"),
    ],
)
def test_a_misshapen_export_is_one_line_naming_file_and_entity(capsys, tmp_path, export, named):
    code, _, err = _analyze(capsys, tmp_path, export)

    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("pare:")]
    assert line.startswith(f"pare: {tmp_path / 'export.json'}: ") and line.endswith(named)
    assert "Traceback" not in err


def test_deeply_nested_json_is_not_readable_json(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"RoleDetailList": ' + "[" * 100_000 + "]" * 100_000 + "}")

    with pytest.raises(ExportError, match="deep.json: not readable JSON"):
        load_export(path)
