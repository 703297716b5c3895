"""`pare analyze` on real exports and real CloudTrail files, with no AWS and no database."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from bot.cli import main

INVICTUS = "cloudtrail/invictus-ir_aws_dataset"
# These two files hold person-a's ListBuckets and CreateFunction20150331 calls (2023-07-10).
LISTBUCKETS_FILE = "200000000011_CloudTrail_us-east-1_20230710T1235Z_YbVFCP9AYzJDhHV9.json"
LAMBDA_FILE = "200000000011_CloudTrail_us-east-1_20230710T1230Z_ZtUNbBkwAu98FPZb.json"
PERSON_A = "arn:aws:iam::200000000012:user/person-a"


def analyze_json(capsys, *args: str) -> tuple[list[dict], str]:
    """Run `pare analyze --json`; return its rows and what it said on stderr."""
    assert main(["analyze", "--json", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_cloudsplaining_snapshot_keeps_aws_owned_roles_out(realdata, capsys):
    export = realdata / "aws_api_responses/cloudsplaining-examples/example.json"
    rows, _ = analyze_json(capsys, "--authorization-details", str(export), "--as-of", "2026-12-01")

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
    # The real files cover one afternoon; made-up records, one a day, show the trail was
    # delivering on every day of the 30-day window before it.
    openers = [
        {
            "eventTime": f"{date(2023, 6, 1) + timedelta(days=n)}T00:00:00Z",
            "eventSource": "sts.amazonaws.com",
            "eventName": "GetCallerIdentity",
            "eventType": "AwsApiCall",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::200000000012:user/other"},
        }
        for n in range(40)
    ]
    (folder / "opener.json").write_text(json.dumps({"Records": openers}))
    return folder


def test_real_cloudtrail_names_map_to_iam_actions(realdata, tmp_path, capsys):
    export = _export_for_person_a(tmp_path)
    trail = _trail(realdata, tmp_path, LISTBUCKETS_FILE, LAMBDA_FILE)
    rows, err = analyze_json(
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
    rows, err = analyze_json(
        capsys,
        *("--authorization-details", str(export), "--cloudtrail", str(trail)),
        *("--as-of", "2023-07-11", "--window-days", "30"),
    )

    assert "skipped broken CloudTrail file aws.execution.ec2-user-data.json" in err
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


# -- hostile CloudTrail folders: whatever they hold, nothing is offered on their word --------

ACC = "111122223333"
AS_OF = date(2026, 12, 1)


def _call(day: date, role: str = "other", name: str = "DescribeInstances", **extra) -> dict:
    record = {
        "eventTime": f"{day}T10:00:00Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "eventType": "AwsApiCall",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACC}:assumed-role/{role}/s",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACC}:role/{role}"}
            },
        },
    }
    record.update(extra)
    return record


def _daily(first: date, last: date) -> list[dict]:
    return [_call(first + timedelta(days=n)) for n in range((last - first).days + 1)]


def _idle_export(tmp_path: Path) -> Path:
    role = {
        "RoleName": "idle",
        "Arn": f"arn:aws:iam::{ACC}:role/idle",
        "Path": "/",
        "CreateDate": "2020-01-01T00:00:00Z",
        "RolePolicyList": [
            {
                "PolicyName": "p",
                "PolicyDocument": {
                    "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeInstances"}]
                },
            }
        ],
        "AttachedManagedPolicies": [],
        "RoleLastUsed": {"LastUsedDate": "2026-11-30T00:00:00Z"},
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"RoleDetailList": [role], "UserDetailList": []}))
    return path


def _ec2_rows(
    capsys, tmp_path: Path, files: dict[str, bytes | list[dict]]
) -> tuple[list[dict], str]:
    folder = tmp_path / "trail"
    folder.mkdir()
    for name, content in files.items():
        data = content if isinstance(content, bytes) else json.dumps({"Records": content})
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    rows, err = analyze_json(
        capsys,
        *("--authorization-details", str(_idle_export(tmp_path)), "--cloudtrail", str(folder)),
        *("--as-of", str(AS_OF)),
    )
    return [r for r in rows if r["service"] == "ec2"], err


def test_logs_of_every_day_prove_a_service_unused(capsys, tmp_path):
    rows, err = _ec2_rows(
        capsys, tmp_path, {"a.json": _daily(date(2026, 8, 20), date(2026, 11, 30))}
    )

    assert [r["status"] for r in rows] == ["unused"]


def test_a_gap_in_the_logs_is_not_coverage(capsys, tmp_path):
    old, new = _daily(date(2026, 8, 20), date(2026, 8, 20)), _daily(date(2026, 11, 30), AS_OF)
    rows, err = _ec2_rows(capsys, tmp_path, {"old.json": old, "new.json": new})

    assert [r["status"] for r in rows] == ["unknown"]
    assert "no CloudTrail records from 2026-08-21 to 2026-11-29" in rows[0]["reason"]
    assert "nothing from 2026-08-21 to 2026-11-29" in err


def test_one_record_dated_1970_does_not_stretch_a_day_of_logs(capsys, tmp_path):
    records = [_call(date(2026, 11, 30)), _call(date(1970, 1, 1), name="x")]
    rows, err = _ec2_rows(capsys, tmp_path, {"a.json": records})

    assert [r["status"] for r in rows] == ["unknown"]
    assert "from 1970-01-02 to 2026-11-29" in rows[0]["reason"]


def test_a_record_without_a_readable_time_fails_closed_and_is_reported_once(capsys, tmp_path):
    records = _daily(date(2026, 8, 20), date(2026, 11, 30))
    # The only use of ec2 by idle: its time cannot be read, so the call may be in the window.
    records += [_call(date(2026, 11, 15), role="idle", eventTime=t) for t in ("2026/11/15", 5)]
    rows, err = _ec2_rows(capsys, tmp_path, {"a.json": records})

    assert [r["status"] for r in rows] == ["unknown"]
    assert "2 CloudTrail records could not be read (no readable eventTime)" in rows[0]["reason"]
    assert err.count("unreadable CloudTrail records") == 1


@pytest.mark.parametrize(
    "broken",
    [
        {"eventType": []},
        {"userIdentity": {"type": ["AssumedRole"]}},
        {"userIdentity": {"type": "AssumedRole", "sessionContext": "x"}},
        {"userIdentity": {"type": "AssumedRole", "sessionContext": {"sessionIssuer": {"arn": 5}}}},
        {"eventName": None},
    ],
)
def test_a_record_of_the_wrong_shape_is_skipped_and_fails_closed(capsys, tmp_path, broken):
    records = _daily(date(2026, 8, 20), date(2026, 11, 30))
    records.append(_call(date(2026, 11, 15), role="idle", **broken))
    rows, err = _ec2_rows(capsys, tmp_path, {"a.json": records})

    assert [r["status"] for r in rows] == ["unknown"]
    assert "CloudTrail record could not be read" in rows[0]["reason"]


def test_deeply_nested_and_inflating_files_are_broken_not_fatal(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("bot.evidence.cloudtrail.MAX_FILE_BYTES", 300_000)
    records = _daily(date(2026, 8, 20), date(2026, 11, 30))
    bomb = gzip.compress(b" " * 400_000 + json.dumps({"Records": []}).encode())
    deep = b'{"Records": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    rows, err = _ec2_rows(
        capsys,
        tmp_path,
        {"a.json": records, "bomb.json.gz": bomb, "deep.json": deep},
    )

    assert [r["status"] for r in rows] == ["unknown"]
    assert (
        "bomb.json.gz could not be read (larger than 300,000 bytes uncompressed)"
        in rows[0]["reason"]
    )
    assert "deep.json could not be read (RecursionError)" in rows[0]["reason"]


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"PARE_WINDOW_DAYS": "abc"}, [], "pare: PARE_WINDOW_DAYS 'abc' is not a number of days"),
        ({}, ["--as-of", "0001-01-01"], "pare: --as-of '0001-01-01' is before AWS existed"),
        ({}, ["--as-of", "2026-02-30"], "pare: --as-of '2026-02-30' is not a date"),
    ],
)
def test_bad_settings_are_one_line_not_a_traceback(
    capsys, tmp_path, monkeypatch, env, args, message
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    export = _idle_export(tmp_path)

    assert main(["analyze", "--authorization-details", str(export), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
