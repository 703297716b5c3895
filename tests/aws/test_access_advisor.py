"""Access Advisor jobs through botocore's Stubber, on AirIAM's real 200-service list."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.stub import Stubber

from bot.analysis import analyze_principal
from bot.aws.access_advisor import read_last_accessed
from bot.aws.session import CLIENT_CONFIG, AccountSession
from bot.domain import Policy, PrincipalRecord
from bot.teams import Account, Exclusions

ACCOUNT = "200000000088"
JENKINS = f"arn:aws:iam::{ACCOUNT}:user/user-jenkins"
BUILDER = f"arn:aws:iam::{ACCOUNT}:role/builder"
JOB_JENKINS, JOB_BUILDER, JOB_SLOW, JOB_CUT, JOB_OK = (
    f"{n}0000000-0000-4000-8000-000000000000" for n in range(1, 6)
)
# The list's newest use is 2020-02-10; the job completes ten days later.
DONE = datetime(2020, 2, 20, tzinfo=UTC)


def _principal(arn: str, *actions: str) -> PrincipalRecord:
    doc = {"Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}
    return PrincipalRecord(
        account_id=ACCOUNT,
        arn=arn,
        kind="user" if ":user/" in arn else "role",
        name=arn.rsplit("/", 1)[-1],
        created_at=DONE - timedelta(days=900),
        last_used_at=DONE - timedelta(days=1),
        policies=[Policy("work", doc, "inline")],
    )


def _services(realdata: Path) -> list[dict[str, Any]]:
    path = realdata / "aws_api_responses/airiam/service_last_access__L18.json"
    services = json.loads(path.read_text())
    for entry in services:
        if entry["ServiceNamespace"] == "s3":
            # Action-level tracking, as GetServiceLastAccessedDetails gives it for S3.
            entry["LastAuthenticated"] = "2020-02-01T00:00:00+00:00"
            entry["TrackedActionsLastAccessed"] = [
                {"ActionName": "ListAllMyBuckets", "LastAccessedTime": "2020-02-01T00:00:00Z"},
                {"ActionName": "GetBucketLocation"},
            ]
    return services


def _page(services: list[dict[str, Any]], status: str = "COMPLETED", **extra: Any) -> dict:
    return {
        "JobStatus": status,
        "JobType": "ACTION_LEVEL",
        "JobCreationDate": DONE - timedelta(minutes=1),
        "JobCompletionDate": DONE,
        "ServicesLastAccessed": services,
        "IsTruncated": False,
        **extra,
    }


def _session() -> AccountSession:
    return AccountSession(Account(id=ACCOUNT, sources=("access_advisor",)), boto3.Session())


def _iam() -> Any:
    return boto3.client("iam", region_name="us-east-1", config=CLIENT_CONFIG)


def _judge(principal: PrincipalRecord, evidence: Any) -> Any:
    return analyze_principal(
        principal, [evidence], as_of=DONE, window_days=90, exclusions=Exclusions()
    )


def test_jobs_are_polled_and_every_page_read(realdata: Path) -> None:
    services = _services(realdata)
    iam, sleeps = _iam(), []
    with Stubber(iam) as stub:
        # A throttled start is retried after a wait.
        stub.add_client_error(
            "generate_service_last_accessed_details",
            service_error_code="Throttling",
            http_status_code=400,
        )
        for arn, job in ((JENKINS, JOB_JENKINS), (BUILDER, JOB_BUILDER)):
            stub.add_response(
                "generate_service_last_accessed_details",
                {"JobId": job},
                expected_params={"Arn": arn, "Granularity": "ACTION_LEVEL"},
            )
        stub.add_response(
            "get_service_last_accessed_details",
            _page([], status="IN_PROGRESS"),
            expected_params={"JobId": JOB_JENKINS, "MaxItems": 1000},
        )
        error = {"Message": "internal error", "Code": "ServiceFailure"}
        stub.add_response(
            "get_service_last_accessed_details", _page([], status="FAILED", Error=error)
        )
        stub.add_response(
            "get_service_last_accessed_details",
            _page(services[:150], IsTruncated=True, Marker="page-2"),
        )
        stub.add_response(
            "get_service_last_accessed_details",
            _page(services[150:]),
            expected_params={"JobId": JOB_JENKINS, "MaxItems": 1000, "Marker": "page-2"},
        )
        read = read_last_accessed(
            _session(), [_jenkins(), _builder()], iam=iam, sleep=sleeps.append
        )
        stub.assert_no_pending_responses()

    assert len(sleeps) == 2
    assert read.calls["iam:GetServiceLastAccessedDetails"] == 4
    jenkins = _judge(_jenkins(), read.evidence[JENKINS])
    unused = {f.service: f.actions for f in jenkins.findings if f.status == "unused"}
    assert jenkins.data_state == "complete"
    # ec2 was last used in 2019-08, outside the window; ecr and ecs inside it; iam never.
    assert set(unused) == {"ec2", "iam", "s3"}
    assert unused["iam"] is None and unused["s3"] == ["s3:GetBucketLocation"]

    builder = _judge(_builder(), read.evidence[BUILDER])
    assert builder.data_state == "incomplete" and "internal error" in builder.data_reason
    assert all(f.status != "unused" for f in builder.findings)


def _jenkins() -> PrincipalRecord:
    return _principal(
        JENKINS, "ec2:DescribeInstances", "ecr:PutImage", "ecs:ListClusters", "iam:GetUser",
        "s3:ListAllMyBuckets", "s3:GetBucketLocation",
    )  # fmt: skip


def _builder() -> PrincipalRecord:
    return _principal(BUILDER, "ecs:ListClusters")


def test_a_job_still_running_when_the_wait_ends_fails_closed(realdata: Path) -> None:
    iam, sleeps = _iam(), []
    with Stubber(iam) as stub:
        stub.add_response("generate_service_last_accessed_details", {"JobId": JOB_SLOW})
        for _ in range(40):
            stub.add_response("get_service_last_accessed_details", _page([], "IN_PROGRESS"))
        read = read_last_accessed(_session(), [_builder()], iam=iam, sleep=sleeps.append)

    assert 0 < sum(sleeps) <= 180
    result = _judge(_builder(), read.evidence[BUILDER])
    assert result.data_state == "incomplete" and "IN_PROGRESS" in result.data_reason


def test_a_page_that_cannot_be_read_leaves_the_report_truncated(realdata: Path) -> None:
    services = _services(realdata)
    iam = _iam()
    with Stubber(iam) as stub:
        stub.add_response("generate_service_last_accessed_details", {"JobId": JOB_CUT})
        stub.add_response(
            "get_service_last_accessed_details",
            _page(services[:150], IsTruncated=True, Marker="page-2"),
        )
        stub.add_client_error(
            "get_service_last_accessed_details", service_error_code="NoSuchEntity"
        )
        read = read_last_accessed(_session(), [_jenkins()], iam=iam, sleep=lambda _: None)

    result = _judge(_jenkins(), read.evidence[JENKINS])
    assert result.data_state == "incomplete" and "truncated" in result.data_reason
    assert all(f.status != "unused" for f in result.findings)


def test_a_refused_job_fails_only_its_principal() -> None:
    iam = _iam()
    with Stubber(iam) as stub:
        stub.add_client_error(
            "generate_service_last_accessed_details", service_error_code="AccessDenied"
        )
        stub.add_response("generate_service_last_accessed_details", {"JobId": JOB_OK})
        stub.add_response("get_service_last_accessed_details", _page([]))
        read = read_last_accessed(
            _session(), [_builder(), _jenkins()], iam=iam, sleep=lambda _: None
        )

    assert "AccessDenied" in read.evidence[BUILDER].problems[0]
    assert read.evidence[JENKINS].problems == []
