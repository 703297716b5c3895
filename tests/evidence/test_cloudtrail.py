"""CloudTrail log files as evidence, on the real logs in ../shared/realdata."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.analysis import analyze
from bot.domain import Policy, PrincipalRecord
from bot.evidence.actions import EVENT_ACTIONS, actions_of, map_event, prefix_of
from bot.evidence.cloudtrail import TrailReadout, parse_log_bytes, read_log_folder
from bot.teams import Exclusions

INVICTUS = "cloudtrail/invictus-ir_aws_dataset"
STRATUS = "cloudtrail/stratus-red-team_detonation-logs"
SIGHTINGS = "cloudtrail/cloudtrail2sightings_zip"


def _actions(readout: TrailReadout) -> dict[str, set[str]]:
    return {f"{kind}/{name}": set(u.actions) for (kind, _, name), u in readout.usage.items()}


def test_the_invictus_trail_reads_whole_with_its_time_range(realdata: Path) -> None:
    readout = read_log_folder(realdata / INVICTUS)

    assert readout.files_read == 55
    assert readout.records == 2900
    assert readout.broken_files == []
    assert readout.covered_from == datetime(2023, 7, 10, 11, 42, 18, tzinfo=UTC)
    assert readout.covered_to == datetime(2023, 7, 10, 12, 37, 50, tzinfo=UTC)


def test_event_names_become_the_iam_actions_they_need(realdata: Path) -> None:
    used = set().union(*_actions(read_log_folder(realdata / INVICTUS)).values())

    assert "s3:listallmybuckets" in used
    assert "lambda:createfunction" in used
    assert "lambda:updatefunctioncode" in used
    assert not any("20150331" in action for action in used)
    assert "s3:listbuckets" not in used


def test_an_unmappable_event_keeps_its_whole_service(realdata: Path) -> None:
    readout = read_log_folder(realdata / INVICTUS)
    gaps = {prefix for usage in readout.usage.values() for prefix in usage.gaps}

    # GetStorageLensDashboardDataInternal names no IAM action.
    assert "s3" in gaps


def test_assumed_roles_are_credited_to_the_role_not_the_session(realdata: Path) -> None:
    readout = read_log_folder(realdata / STRATUS)
    arn = "arn:aws:iam::200000000068:role/stratus-red-team-ec2-get-password-data-role"

    evidence = readout.evidence_for([arn])[arn][0]

    assert readout.files_read == 35 and readout.records == 310
    assert "ec2:getpassworddata" in evidence.actions
    assert evidence.services["ec2"].year == 2024


def test_aws_service_callers_are_nobodys_use() -> None:
    record = {
        "eventTime": "2024-01-01T00:00:00Z",
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "RotationSucceeded",
        "userIdentity": {"type": "AWSService", "invokedBy": "secretsmanager.amazonaws.com"},
    }
    readout = TrailReadout()
    readout.add_records([record])

    assert readout.records == 1 and readout.usage == {}


def test_the_broken_file_is_skipped_reported_and_fails_principals_closed(
    realdata: Path,
) -> None:
    readout = read_log_folder(realdata / SIGHTINGS)
    arn = "arn:aws:iam::200000000035:role/account-admin"
    principal = PrincipalRecord(
        account_id="200000000035",
        arn=arn,
        kind="role",
        name="account-admin",
        created_at=datetime(2020, 1, 1, tzinfo=UTC),
        last_used_at=datetime(2022, 7, 20, tzinfo=UTC),
        policies=[
            Policy(
                name="p",
                origin="inline",
                document={"Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues"}]},
            )
        ],
    )

    evidence = readout.evidence_for([arn])
    (result,) = analyze(
        [principal],
        evidence,
        as_of=datetime(2022, 7, 21, tzinfo=UTC),
        window_days=1,
        exclusions=Exclusions(),
    )

    assert readout.files_read == 3
    assert readout.broken_files == ["aws.execution.ec2-user-data.json"]
    assert "ec2-user-data.json" in evidence[arn][0].problems[0]
    assert result.data_state == "incomplete"
    assert [f.status for f in result.findings if f.status == "unused"] == []


def test_gzipped_plain_and_bare_list_files_read_alike(realdata: Path, tmp_path: Path) -> None:
    source = sorted((realdata / INVICTUS).iterdir())[0]
    plain = source.read_bytes()
    records = json.loads(plain)["Records"]

    assert parse_log_bytes(gzip.compress(plain)) == records
    assert parse_log_bytes(json.dumps(records).encode()) == records
    with pytest.raises(ValueError):
        parse_log_bytes(b"\x1f\x8bnot gzip")


def test_a_principal_without_calls_gets_empty_evidence_over_the_range(realdata: Path) -> None:
    readout = read_log_folder(realdata / INVICTUS)
    quiet = "arn:aws:iam::200000000012:role/never-called"

    (evidence,) = readout.evidence_for([quiet])[quiet]

    assert evidence.source == "cloudtrail"
    assert evidence.actions == {} and evidence.services == {}
    assert evidence.covered_from == readout.covered_from
    assert evidence.action_level is True


def test_logs_that_cover_no_time_prove_nothing(tmp_path: Path) -> None:
    readout = read_log_folder(tmp_path)

    assert readout.evidence_for(["arn:aws:iam::111122223333:role/x"]) == {
        "arn:aws:iam::111122223333:role/x": []
    }


def test_every_table_entry_names_a_catalogued_action() -> None:
    for (prefix, event), targets in EVENT_ACTIONS.items():
        for target in targets:
            assert target.lower() in actions_of(prefix), (prefix, event, target)


def test_service_hosts_with_other_prefixes() -> None:
    assert prefix_of("monitoring.amazonaws.com") == "cloudwatch"
    assert prefix_of("email.amazonaws.com") == "ses"
    assert map_event("monitoring.amazonaws.com", "DescribeAlarms").actions == (
        "cloudwatch:describealarms",
    )
    assert map_event("apigateway.amazonaws.com", "GetResource").actions == ("apigateway:get",)
    assert map_event("cloudfront.amazonaws.com", "UpdateDistribution2017_03_25").actions == (
        "cloudfront:updatedistribution",
    )
    assert map_event("signin.amazonaws.com", "ConsoleLogin").permission is False
