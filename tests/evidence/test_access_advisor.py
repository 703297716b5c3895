"""Access Advisor evidence, on the real 200-service last-accessed list of an AirIAM snapshot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.analysis import analyze_principal
from bot.domain import Policy, PrincipalRecord
from bot.evidence.access_advisor import from_last_accessed
from bot.teams import Exclusions

# The list's newest use is 2020-02-10; judge as of ten days later.
AS_OF = datetime(2020, 2, 20, tzinfo=UTC)


def jenkins(actions: list[str]) -> PrincipalRecord:
    doc = {"Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    return PrincipalRecord(
        account_id="200000000088",
        arn="arn:aws:iam::200000000088:user/user-jenkins",
        kind="user",
        name="user-jenkins",
        created_at=AS_OF - timedelta(days=900),
        policies=[Policy("jenkins", doc, "inline")],
    )


def details(realdata, **extra) -> dict:
    services = json.loads(
        (realdata / "aws_api_responses/airiam/service_last_access__L18.json").read_text()
    )
    body = {
        "JobStatus": "COMPLETED",
        "JobType": "SERVICE_LEVEL",
        "JobCompletionDate": AS_OF.isoformat(),
        "IsTruncated": False,
        "ServicesLastAccessed": services,
    }
    body.update(extra)
    return body


def judge(principal, evidence):
    return analyze_principal(
        principal, [evidence], as_of=AS_OF, window_days=90, exclusions=Exclusions()
    )


def test_only_the_services_never_used_are_offered(realdata):
    evidence = from_last_accessed(details(realdata))
    result = judge(jenkins(["ec2:*", "ecr:*", "ecs:*", "iam:*", "s3:*"]), evidence)

    unused = {f.service: f for f in result.findings if f.status == "unused"}
    assert result.data_state == "complete"
    # ec2 was last used in 2019-08, outside the 90-day window; ecr and ecs inside it.
    assert set(unused) == {"ec2", "iam", "s3"}
    assert unused["ec2"].last_used_at.date().isoformat() == "2019-08-05"
    assert unused["iam"].last_used_at is None
    assert {f.source for f in unused.values()} == {"access_advisor"}


def test_service_level_evidence_never_names_single_actions(realdata):
    evidence = from_last_accessed(details(realdata))
    result = judge(jenkins(["ecr:GetAuthorizationToken", "ecr:PutImage"]), evidence)

    assert [f for f in result.findings if f.status == "unused"] == []


def test_a_granted_service_missing_from_the_list_fails_closed(realdata):
    body = details(realdata)
    body["ServicesLastAccessed"] = [
        s for s in body["ServicesLastAccessed"] if s["ServiceNamespace"] != "iam"
    ]
    result = judge(jenkins(["iam:*", "s3:*"]), from_last_accessed(body))

    assert result.data_state == "incomplete"
    assert "iam" in result.data_reason
    assert all(f.status != "unused" for f in result.findings)


def test_failed_and_truncated_jobs_fail_closed(realdata):
    for body in (
        details(realdata, JobStatus="FAILED", Error={"Message": "internal", "Code": "x"}),
        details(realdata, IsTruncated=True, Marker="next"),
    ):
        result = judge(jenkins(["s3:*"]), from_last_accessed(body))
        assert result.data_state == "incomplete"
        assert all(f.status != "unused" for f in result.findings)


def test_action_level_data_wins_for_tracked_services(realdata):
    body = details(realdata, JobType="ACTION_LEVEL")
    for entry in body["ServicesLastAccessed"]:
        if entry["ServiceNamespace"] == "s3":
            entry["LastAuthenticated"] = "2020-02-01T00:00:00+00:00"
            entry["TrackedActionsLastAccessed"] = [
                {"ActionName": "ListAllMyBuckets", "LastAccessedTime": "2020-02-01T00:00:00Z"},
                {"ActionName": "GetObject"},
            ]
    principal = jenkins(["s3:ListAllMyBuckets", "s3:ListBucket", "ecr:PutImage"])
    result = judge(principal, from_last_accessed(body))

    unused = {f.service: f.actions for f in result.findings if f.status == "unused"}
    assert unused == {"s3": ["s3:ListBucket"]}
