"""`pare analyze` on real exports and real CloudTrail files, with no AWS and no database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot.cli import main

INVICTUS = "cloudtrail/invictus-ir_aws_dataset"
# These two files hold person-a's ListBuckets and CreateFunction20150331 calls (2023-07-10).
LISTBUCKETS_FILE = "200000000011_CloudTrail_us-east-1_20230710T1235Z_YbVFCP9AYzJDhHV9.json"
LAMBDA_FILE = "200000000011_CloudTrail_us-east-1_20230710T1230Z_ZtUNbBkwAu98FPZb.json"
PERSON_A = "arn:aws:iam::200000000012:user/person-a"


def analyze_json(capsys, *args: str) -> list[dict]:
    assert main(["analyze", "--json", *args]) == 0
    captured = capsys.readouterr()
    analyze_json.err = captured.err
    return json.loads(captured.out)


def test_cloudsplaining_snapshot_keeps_aws_owned_roles_out(realdata, capsys):
    export = realdata / "aws_api_responses/cloudsplaining-examples/example.json"
    rows = analyze_json(capsys, "--authorization-details", str(export), "--as-of", "2026-12-01")

    keys = {"principal_arn", "kind", "service", "actions", "status", "reason", "last_used"}
    assert all(keys <= row.keys() for row in rows)
    linked = {r["principal_arn"] for r in rows if "/aws-service-role/" in r["principal_arn"]}
    assert len(linked) == 8
    assert {r["status"] for r in rows if r["principal_arn"] in linked} == {"excluded"}
    # Without any usage evidence no permission can be proven unused.
    assert not [r for r in rows if r["kind"] == "unused_permission" and r["status"] == "unused"]
    # Roles last used in 2022 are unused by December 2026.
    unused_roles = [r for r in rows if r["kind"] == "unused_role" and r["status"] == "unused"]
    assert unused_roles
    assert all(r["last_used"] is None or r["last_used"] < "2026-09-02" for r in unused_roles)


def _export_for_person_a(tmp_path: Path) -> Path:
    statement = {
        "Effect": "Allow",
        "Action": [
            "s3:ListAllMyBuckets",
            "s3:ListBucket",
            "lambda:CreateFunction",
            "lambda:DeleteFunction",
            "lambda:PublishVersion",
            "sqs:*",
        ],
        "Resource": "*",
    }
    export = {
        "UserDetailList": [
            {
                "UserName": "person-a",
                "Arn": PERSON_A,
                "Path": "/",
                "CreateDate": "2022-01-01T00:00:00Z",
                "UserPolicyList": [
                    {"PolicyName": "work", "PolicyDocument": {"Statement": [statement]}}
                ],
                "AttachedManagedPolicies": [],
                "GroupList": [],
            }
        ],
        "RoleDetailList": [],
        "GroupDetailList": [],
        "Policies": [],
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    return path


def _trail(realdata: Path, tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "trail"
    folder.mkdir()
    for name in names:
        shutil.copy(realdata / INVICTUS / name, folder / name)
    # The real files cover one afternoon; one earlier record (made up here) shows the trail
    # was already delivering when the 30-day window opened.
    opener = {
        "eventTime": "2023-06-01T00:00:00Z",
        "eventSource": "sts.amazonaws.com",
        "eventName": "GetCallerIdentity",
        "eventType": "AwsApiCall",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::200000000012:user/other"},
    }
    (folder / "opener.json").write_text(json.dumps({"Records": [opener]}))
    return folder


def test_real_cloudtrail_names_map_to_iam_actions(realdata, tmp_path, capsys):
    export = _export_for_person_a(tmp_path)
    trail = _trail(realdata, tmp_path, LISTBUCKETS_FILE, LAMBDA_FILE)
    rows = analyze_json(
        capsys,
        *("--authorization-details", str(export), "--cloudtrail", str(trail)),
        *("--as-of", "2023-07-11", "--window-days", "30"),
    )

    unused = {r["service"]: r["actions"] for r in rows if r["status"] == "unused"}
    # CreateFunction20150331 is lambda:CreateFunction: used, so only the other two are offered.
    assert unused["lambda"] == ["lambda:DeleteFunction", "lambda:PublishVersion"]
    # person-a also called GetStorageLensDashboardDataInternal, which names no IAM action:
    # it might stand for any s3 action, so nothing of s3 is offered.
    assert "s3" not in unused
    assert "sqs:ListQueues" in (unused["sqs"] or [])


def test_broken_cloudtrail_file_is_reported_and_nothing_is_offered(realdata, tmp_path, capsys):
    export = _export_for_person_a(tmp_path)
    trail = _trail(realdata, tmp_path, LISTBUCKETS_FILE)
    broken = realdata / "cloudtrail/cloudtrail2sightings_zip/aws.execution.ec2-user-data.json"
    shutil.copy(broken, trail / broken.name)
    rows = analyze_json(
        capsys,
        *("--authorization-details", str(export), "--cloudtrail", str(trail)),
        *("--as-of", "2023-07-11", "--window-days", "30"),
    )

    assert "skipped broken CloudTrail file aws.execution.ec2-user-data.json" in analyze_json.err
    assert rows and all(r["status"] != "unused" for r in rows)
    assert any("ec2-user-data.json" in r["reason"] for r in rows)


def test_table_output_and_clear_errors(realdata, tmp_path, capsys):
    export = realdata / "aws_api_responses/cloudsplaining-examples/example.json"
    assert main(["analyze", "--authorization-details", str(export)]) == 0
    out = capsys.readouterr().out
    assert "122 principals" in out and "excluded" in out

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["analyze", "--authorization-details", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["analyze"])
