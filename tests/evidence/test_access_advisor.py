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
                {"ActionName": "ListBucket"},
            ]
    principal = jenkins(["s3:ListAllMyBuckets", "s3:ListBucket", "ecr:PutImage"])
    result = judge(principal, from_last_accessed(body))

    unused = {f.service: f.actions for f in result.findings if f.status == "unused"}
    assert unused == {"s3": ["s3:ListBucket"]}


def test_an_action_access_advisor_does_not_track_is_unknown_not_unused(realdata):
    body = details(realdata, JobType="ACTION_LEVEL")
    for entry in body["ServicesLastAccessed"]:
        if entry["ServiceNamespace"] == "s3":
            entry["LastAuthenticated"] = "2020-02-01T00:00:00+00:00"
            entry["TrackedActionsLastAccessed"] = [
                {"ActionName": "CreateBucket", "LastAccessedTime": "2020-02-01T00:00:00Z"},
                {"ActionName": "DeleteBucket"},
            ]
    grants = ["s3:CreateBucket", "s3:DeleteBucket", "s3:GetBucketPolicy", "s3:ListAllMyBuckets"]
    result = judge(jenkins(grants), from_last_accessed(body))

    by_status = {f.status: f for f in result.findings if f.service == "s3"}
    # DeleteBucket is tracked and unused; the two untracked actions may have been used.
    assert by_status["unused"].actions == ["s3:DeleteBucket"]
    assert by_status["unknown"].actions == ["s3:GetBucketPolicy", "s3:ListAllMyBuckets"]
    assert "does not record the use of 2 of them one by one" in by_status["unknown"].reason


def test_an_unreadable_last_accessed_answer_fails_closed_without_a_traceback(realdata):
    s3 = {
        "ServiceNamespace": "s3",
        "LastAuthenticated": "2020-02-01T00:00:00Z",
        "TrackedActionsLastAccessed": [{"LastAccessedTime": "2020-02-01T00:00:00Z"}],
    }
    bodies = {
        "JobCompletionDate 'soon' is not a date": details(realdata, JobCompletionDate="soon"),
        "LastAuthenticated 'yesterday' is not a date": details(
            realdata, ServicesLastAccessed=[{**s3, "LastAuthenticated": "yesterday"}]
        ),
        "last-accessed job FAILED boom": details(realdata, JobStatus="FAILED", Error="boom"),
        "a tracked action has no ActionName": details(
            realdata, JobType="ACTION_LEVEL", ServicesLastAccessed=[s3]
        ),
        "a ServicesLastAccessed entry is not an object": details(
            realdata, ServicesLastAccessed=["s3"]
        ),
        "ServicesLastAccessed is not a list": details(realdata, ServicesLastAccessed={"s3": 1}),
    }
    for problem, body in bodies.items():
        result = judge(jenkins(["s3:*"]), from_last_accessed(body))

        assert result.data_state == "incomplete"
        assert problem in result.data_reason
        assert all(f.status != "unused" for f in result.findings)
