"""Access Analyzer unused access through botocore's Stubber, which checks every shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bot.analysis import analyze_principal
from bot.aws.access_analyzer import read_unused_access
from bot.aws.session import CLIENT_CONFIG, AccountSession
from bot.domain import AccessKey, LoginProfile, Policy, PrincipalRecord
from bot.evidence.access_analyzer import from_findings
from bot.teams import Account, Exclusions

ACCOUNT = "123456789012"
ANALYZER = f"arn:aws:access-analyzer:us-east-1:{ACCOUNT}:analyzer/unused"
EXAMPLES = "aws_api_responses/aws-docs-and-blog-examples"
ANALYZED = datetime(2024, 7, 22, tzinfo=UTC)
AS_OF = ANALYZED + timedelta(hours=6)
USER = f"arn:aws:iam::{ACCOUNT}:user/demoIAMUser"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/demoIAMRole"
BLOG_ROLE = f"arn:aws:iam::{ACCOUNT}:role/IAMRole_IA2_Blog_EC2Role"


def _example(realdata: Path, name: str) -> dict[str, Any]:
    data = json.loads(next((realdata / EXAMPLES).glob(f"{name}*.json")).read_text())
    return {k: v for k, v in data.items() if v is not None}


def _session() -> AccountSession:
    return AccountSession(Account(id=ACCOUNT, sources=("access_analyzer",)), boto3.Session())


def _client() -> Any:
    return boto3.client("accessanalyzer", region_name="us-east-1", config=CLIENT_CONFIG)


def _analyzers(stub: Stubber) -> None:
    # Two pages; the first holds only an external-access analyzer, which is not ours to read.
    stub.add_response(
        "list_analyzers",
        {
            "analyzers": [
                {
                    "arn": f"arn:aws:access-analyzer:us-east-1:{ACCOUNT}:analyzer/external",
                    "name": "external",
                    "type": "ACCOUNT",
                    "createdAt": ANALYZED,
                    "status": "ACTIVE",
                }
            ],
            "nextToken": "analyzers-2",
        },
    )
    stub.add_response(
        "list_analyzers",
        {
            "analyzers": [
                {
                    "arn": ANALYZER,
                    "name": "unused",
                    "type": "ACCOUNT_UNUSED_ACCESS",
                    "createdAt": ANALYZED - timedelta(days=400),
                    "lastResourceAnalyzedAt": ANALYZED,
                    "status": "ACTIVE",
                    "configuration": {"unusedAccess": {"unusedAccessAge": 90}},
                }
            ]
        },
        expected_params={"nextToken": "analyzers-2"},
    )


def _finding(resource: str, kind: str, details: list[dict[str, Any]], **extra: Any) -> dict:
    return {
        "id": extra.pop("id"),
        "resource": resource,
        "resourceType": "AWS::IAM::Role" if ":role/" in resource else "AWS::IAM::User",
        "resourceOwnerAccount": ACCOUNT,
        "status": "ACTIVE",
        "findingType": kind,
        "analyzedAt": ANALYZED,
        "createdAt": ANALYZED - timedelta(days=60),
        "updatedAt": ANALYZED,
        "findingDetails": details,
        **extra,
    }


def _list_findings(stub: Stubber, realdata: Path) -> None:
    # Page one is the blog's real ListFindingsV2 answer; page two adds a key and a role.
    first = _example(realdata, "list_findings_v2")
    first["nextToken"] = "findings-2"
    criteria = {
        "resourceOwnerAccount": {"eq": [ACCOUNT]},
        "status": {"eq": ["ACTIVE"]},
        "findingType": {
            "eq": [
                "UnusedIAMRole",
                "UnusedIAMUserAccessKey",
                "UnusedIAMUserPassword",
                "UnusedPermission",
            ]
        },
    }
    stub.add_response(
        "list_findings_v2",
        first,
        expected_params={"analyzerArn": ANALYZER, "filter": criteria, "maxResults": 100},
    )
    summary = {k: v for k, v in first["findings"][0].items()}
    second = [
        {**summary, "id": "key-1", "findingType": "UnusedIAMUserAccessKey"},
        {**summary, "id": "role-1", "resource": BLOG_ROLE, "findingType": "UnusedIAMRole"},
    ]
    stub.add_response(
        "list_findings_v2",
        {"findings": second},
        expected_params={
            "analyzerArn": ANALYZER,
            "filter": criteria,
            "maxResults": 100,
            "nextToken": "findings-2",
        },
    )


def _permission(namespace: str, *actions: str, last: datetime | None = None) -> dict:
    detail: dict[str, Any] = {"serviceNamespace": namespace}
    if actions:
        detail["actions"] = [{"action": a} for a in actions]
    if last:
        detail["lastAccessed"] = last
    return {"unusedPermissionDetails": detail}


def _get_findings(stub: Stubber, realdata: Path, *, throttle: bool = False) -> None:
    user_id, role_id = (
        "0fa3f5a1-bd92-4193-8ca4-aba12cd91370",
        "1e952245-bcf3-48ad-a708-afa460df794b",
    )
    if throttle:
        stub.add_client_error(
            "get_finding_v2", service_error_code="ThrottlingException", http_status_code=429
        )
    # The user's unused services come on two pages of finding details.
    page = _finding(
        USER, "UnusedPermission", [_permission("dynamodb")], id=user_id, nextToken="details-2"
    )
    stub.add_response(
        "get_finding_v2", page, expected_params={"analyzerArn": ANALYZER, "id": user_id}
    )
    page = _finding(USER, "UnusedPermission", [_permission("s3", "PutObject")], id=user_id)
    stub.add_response(
        "get_finding_v2",
        page,
        expected_params={"analyzerArn": ANALYZER, "id": user_id, "nextToken": "details-2"},
    )
    _recommendation(stub, realdata, user_id, slow=True)
    stub.add_response(
        "get_finding_v2",
        _finding(
            ROLE,
            "UnusedPermission",
            [_permission("sqs", last=ANALYZED - timedelta(days=120))],
            id=role_id,
        ),
    )
    _recommendation(stub, realdata, role_id, failed=True)
    key = {"unusedIamUserAccessKeyDetails": {"accessKeyId": "AKIAUNUSED01"}}
    stub.add_response("get_finding_v2", _finding(USER, "UnusedIAMUserAccessKey", [key], id="key-1"))
    last = ANALYZED - timedelta(days=200)
    role = {"unusedIamRoleDetails": {"lastAccessed": last}}
    stub.add_response("get_finding_v2", _finding(BLOG_ROLE, "UnusedIAMRole", [role], id="role-1"))


def _recommendation(
    stub: Stubber, realdata: Path, finding_id: str, *, slow: bool = False, failed: bool = False
) -> None:
    params = {"analyzerArn": ANALYZER, "id": finding_id}
    stub.add_response("generate_finding_recommendation", {}, expected_params=params)
    real = _example(realdata, "get_finding_recommendation")
    waiting = {k: real[k] for k in ("startedAt", "resourceArn", "recommendationType")}
    if slow:
        for _ in range(2):
            stub.add_response(
                "get_finding_recommendation",
                {**waiting, "status": "IN_PROGRESS"},
                expected_params=params,
            )
    if failed:
        error = {"code": "ServiceError", "message": "could not generate"}
        stub.add_response(
            "get_finding_recommendation",
            {**waiting, "status": "FAILED", "error": error},
            expected_params=params,
        )
        return
    # The real answer, split over two pages of steps.
    steps = real["recommendedSteps"]
    stub.add_response(
        "get_finding_recommendation",
        {**real, "recommendedSteps": steps[:3], "nextToken": "steps-2"},
        expected_params=params,
    )
    stub.add_response(
        "get_finding_recommendation",
        {**real, "recommendedSteps": steps[3:]},
        expected_params={**params, "nextToken": "steps-2"},
    )


def _user() -> PrincipalRecord:
    doc = {
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "sqs:ListQueues"], "Resource": "*"},
        ]
    }
    shared = Policy(
        "AppAccess",
        doc,
        "managed",
        arn=f"arn:aws:iam::{ACCOUNT}:policy/AppAccess",
        attached_to=(ROLE,),
    )
    return PrincipalRecord(
        account_id=ACCOUNT,
        arn=USER,
        kind="user",
        name="demoIAMUser",
        created_at=ANALYZED - timedelta(days=500),
        policies=[shared],
        access_keys=[
            AccessKey("AKIAUNUSED01", "Active", ANALYZED - timedelta(days=300), None),
            AccessKey("AKIAUSED02", "Active", ANALYZED - timedelta(days=300), ANALYZED),
        ],
        login_profile=LoginProfile(ANALYZED - timedelta(days=300), ANALYZED - timedelta(days=2)),
    )


def _role(arn: str, last_used: datetime | None) -> PrincipalRecord:
    doc = {"Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}
    return PrincipalRecord(
        account_id=ACCOUNT,
        arn=arn,
        kind="role",
        name=arn.rsplit("/", 1)[-1],
        created_at=ANALYZED - timedelta(days=500),
        last_used_at=last_used,
        policies=[Policy("work", doc, "inline")],
    )


def _judge(principal: PrincipalRecord, evidence: list) -> Any:
    return analyze_principal(
        principal, evidence, as_of=AS_OF, window_days=90, exclusions=Exclusions()
    )


def test_every_page_is_read_and_the_findings_speak_for_the_principals(realdata: Path) -> None:
    client, sleeps = _client(), []
    with Stubber(client) as stub:
        _analyzers(stub)
        _list_findings(stub, realdata)
        _get_findings(stub, realdata, throttle=True)
        read = read_unused_access(_session(), client=client, sleep=sleeps.append)
        stub.assert_no_pending_responses()

    assert read.analyzer is not None and read.analyzer.arn == ANALYZER
    assert read.problems == [] and read.principal_problems == {}
    assert read.calls["access-analyzer:GetFindingV2"] == 6
    # One wait after the throttled call, two while the recommendation was being made.
    assert len(sleeps) == 3 and all(s > 0 for s in sleeps)
    user_finding = next(f for f in read.findings if f["id"].startswith("0fa3"))
    assert len(user_finding["findingDetails"]) == 2
    recommendation = user_finding["recommendation"]
    assert recommendation["status"] == "SUCCEEDED" and len(recommendation["recommendedSteps"]) == 5
    create = recommendation["recommendedSteps"][1]["unusedPermissionsRecommendedStep"]
    assert json.loads(create["recommendedPolicy"])["Statement"][0]["Effect"] == "Allow"

    principals = [_user(), _role(ROLE, AS_OF - timedelta(days=1)), _role(BLOG_ROLE, None)]
    evidence = from_findings(
        read.analyzer, read.findings, principals, read_at=AS_OF, problems=read.problems
    )
    user, role, blog = (_judge(p, evidence[p.arn]) for p in principals)

    unused = {(f.kind, f.service): f for f in user.findings if f.status == "unused"}
    assert user.data_state == "complete"
    assert set(unused) == {
        ("unused_permission", "dynamodb"),
        ("unused_permission", "s3"),
        ("unused_access_key", None),
    }
    assert unused[("unused_permission", "s3")].actions == ["s3:PutObject"]
    assert unused[("unused_access_key", None)].resource_id == "AKIAUNUSED01"
    assert {f.source for f in unused.values()} == {"access_analyzer"}
    detail = unused[("unused_permission", "dynamodb")].detail
    assert detail["access_analyzer"]["recommendation"]["status"] == "SUCCEEDED"
    assert detail["policies"][0]["arn"].endswith("policy/AppAccess")
    assert detail["blast_radius"] == [ROLE]

    role_unused = [f for f in role.findings if f.status == "unused"]
    assert [(f.service, f.source) for f in role_unused] == [("sqs", "access_analyzer")]
    assert role_unused[0].detail["access_analyzer"]["recommendation"]["status"] == "FAILED"
    assert [(f.kind, f.status, f.source) for f in blog.findings] == [
        ("unused_role", "unused", "access_analyzer")
    ]


def test_a_refused_finding_list_fails_every_principal_closed(realdata: Path) -> None:
    client = _client()
    with Stubber(client) as stub:
        _analyzers(stub)
        stub.add_client_error("list_findings_v2", service_error_code="AccessDeniedException")
        read = read_unused_access(_session(), client=client, sleep=lambda _: None)

    assert read.problems == ["Access Analyzer findings not listable: AccessDeniedException"]
    evidence = from_findings(read.analyzer, [], [_user()], read_at=AS_OF, problems=read.problems)
    result = _judge(_user(), evidence[USER])
    assert result.data_state == "incomplete"
    assert all(f.status != "unused" for f in result.findings)


def test_throttling_that_does_not_stop_fails_closed_after_bounded_waits(realdata: Path) -> None:
    client, sleeps = _client(), []
    with Stubber(client) as stub:
        _analyzers(stub)
        stub.add_response(
            "list_findings_v2",
            {"findings": [_example(realdata, "list_findings_v2")["findings"][0]]},
        )
        for _ in range(4):
            stub.add_client_error(
                "get_finding_v2", service_error_code="ThrottlingException", http_status_code=429
            )
        read = read_unused_access(_session(), client=client, sleep=sleeps.append)

    assert len(sleeps) == 3
    assert "ThrottlingException" in read.principal_problems[USER][0]
    evidence = from_findings(
        read.analyzer, [], [_user()], read_at=AS_OF, principal_problems=read.principal_problems
    )
    assert _judge(_user(), evidence[USER]).data_state == "incomplete"


def test_a_slow_recommendation_is_given_up_on_but_the_finding_is_kept(realdata: Path) -> None:
    client, sleeps = _client(), []
    real = _example(realdata, "get_finding_recommendation")
    waiting = {k: real[k] for k in ("startedAt", "resourceArn", "recommendationType")}
    with Stubber(client) as stub:
        _analyzers(stub)
        stub.add_response(
            "list_findings_v2",
            {"findings": [_example(realdata, "list_findings_v2")["findings"][0]]},
        )
        finding = _finding(USER, "UnusedPermission", [_permission("dynamodb")], id="slow-1")
        stub.add_response("get_finding_v2", finding)
        stub.add_response("generate_finding_recommendation", {})
        for _ in range(20):
            stub.add_response("get_finding_recommendation", {**waiting, "status": "IN_PROGRESS"})
        read = read_unused_access(_session(), client=client, sleep=sleeps.append)

    assert read.findings[0]["recommendation"]["status"] == "IN_PROGRESS"
    assert sum(sleeps) <= 60
    assert read.calls["access-analyzer:GetFindingRecommendation"] == len(sleeps) + 1


def test_no_unused_access_analyzer_means_no_evidence_from_it() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("list_analyzers", {"analyzers": []})
        read = read_unused_access(_session(), client=client, sleep=lambda _: None)

    assert read.analyzer is None and read.findings == [] and read.problems == []


@pytest.mark.parametrize("age, unused", [(90, True), (30, False)])
def test_an_analyzer_younger_than_the_window_proves_nothing(age: int, unused: bool) -> None:
    from bot.evidence.access_analyzer import Analyzer

    analyzer = Analyzer(ANALYZER, "ACCOUNT_UNUSED_ACCESS", age, analyzed_at=ANALYZED)
    finding = _finding(ROLE, "UnusedPermission", [_permission("sqs")], id="p-1")
    role = _role(ROLE, AS_OF - timedelta(days=1))
    evidence = from_findings(analyzer, [finding], [role], read_at=AS_OF)

    result = _judge(role, evidence[ROLE])
    assert any(f.status == "unused" for f in result.findings) is unused


def test_principals_the_analyzer_excludes_or_has_not_seen_get_no_word_from_it() -> None:
    from bot.evidence.access_analyzer import Analyzer

    analyzer = Analyzer(
        ANALYZER,
        "ORGANIZATION_UNUSED_ACCESS",
        90,
        analyzed_at=ANALYZED,
        excluded_tags=({"team": "platform"},),
    )
    tagged = _role(ROLE, None)
    tagged.tags = {"team": "platform"}
    fresh = _role(BLOG_ROLE, None)
    fresh.created_at = ANALYZED + timedelta(hours=1)

    evidence = from_findings(analyzer, [], [tagged, fresh], read_at=AS_OF)
    assert evidence == {ROLE: [], BLOG_ROLE: []}


def test_many_member_accounts_are_listed_in_filters_of_twenty() -> None:
    from bot.aws.access_analyzer import FINDING_TYPES, read_organization_unused_access

    members = [f"{n:012d}" for n in range(1, 22)]
    org_arn = "arn:aws:access-analyzer:us-east-1:999999999999:analyzer/org"
    client = _client()
    with Stubber(client) as stub:
        summary = {
            "arn": org_arn,
            "name": "org",
            "type": "ORGANIZATION_UNUSED_ACCESS",
            "createdAt": ANALYZED,
            "status": "ACTIVE",
        }
        stub.add_response("list_analyzers", {"analyzers": [summary]})
        for owners in (members[:20], members[20:]):
            criteria = {
                "resourceOwnerAccount": {"eq": owners},
                "status": {"eq": ["ACTIVE"]},
                "findingType": {"eq": list(FINDING_TYPES)},
            }
            params = {"analyzerArn": org_arn, "filter": criteria, "maxResults": 100}
            stub.add_response("list_findings_v2", {"findings": []}, expected_params=params)
        read = read_organization_unused_access(
            _session(), members, client=client, sleep=lambda _: None
        )
        stub.assert_no_pending_responses()

    assert read.problems == [] and read.analyzer is not None
    # Listed in full and silent: each member's share is "nothing unused", not a problem.
    share = read.share(members[-1])
    assert share.analyzer is not None and share.problems == [] and share.findings == []


def test_two_organisation_analyzers_and_none_named_is_a_problem_for_all() -> None:
    from bot.aws.access_analyzer import read_organization_unused_access

    client = _client()
    with Stubber(client) as stub:
        found = [
            {
                "arn": f"arn:aws:access-analyzer:us-east-1:999999999999:analyzer/{name}",
                "name": name,
                "type": "ORGANIZATION_UNUSED_ACCESS",
                "createdAt": ANALYZED,
                "status": "ACTIVE",
            }
            for name in ("a", "b")
        ]
        stub.add_response("list_analyzers", {"analyzers": found})
        read = read_organization_unused_access(
            _session(), [ACCOUNT], client=client, sleep=lambda _: None
        )

    assert "name one with analyzer_arn" in read.problems[0]
    share = read.share(ACCOUNT)
    evidence = from_findings(share.analyzer, [], [_user()], read_at=AS_OF, problems=share.problems)
    assert _judge(_user(), evidence[USER]).data_state == "incomplete"
