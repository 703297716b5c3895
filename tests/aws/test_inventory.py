"""Reading one account's IAM: moto for what it implements, Stubber for pages and refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.iam.models import iam_backends

from bot.aws.inventory import REPORT_WAIT, read_account
from bot.aws.session import CLIENT_CONFIG, AccountSession, backoff_delays
from bot.errors import AwsReadError
from bot.teams import Account
from tests.aws.helpers import EC2_TRUST, allow

ACCOUNT = "123456789012"


class _StubbedSession(AccountSession):
    def __init__(self, iam: Any):
        super().__init__(
            Account(id=ACCOUNT, sources=("last_used",)), boto3.Session(region_name="us-east-1")
        )
        self.iam = iam

    def client(self, service: str, region: str | None = None) -> Any:
        return self.iam


@pytest.fixture
def account() -> Any:
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        iam = boto3.client("iam", region_name="us-east-1")
        boundary = iam.create_policy(PolicyName="boundary", PolicyDocument=allow("s3:*"))
        shared = iam.create_policy(PolicyName="shared-read", PolicyDocument=allow("sqs:List*"))
        iam.create_role(
            RoleName="app",
            Path="/teams/",
            AssumeRolePolicyDocument=EC2_TRUST,
            Tags=[{"Key": "team", "Value": "payments"}],
            PermissionsBoundary=boundary["Policy"]["Arn"],
        )
        iam.put_role_policy(RoleName="app", PolicyName="own", PolicyDocument=allow("s3:GetObject"))
        iam.attach_role_policy(
            RoleName="app", PolicyArn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
        )
        iam.attach_role_policy(RoleName="app", PolicyArn=shared["Policy"]["Arn"])
        iam.create_group(GroupName="ops")
        iam.put_group_policy(
            GroupName="ops", PolicyName="ops-inline", PolicyDocument=allow("ec2:Describe*")
        )
        iam.attach_group_policy(GroupName="ops", PolicyArn=shared["Policy"]["Arn"])
        iam.create_user(UserName="alice")
        iam.add_user_to_group(GroupName="ops", UserName="alice")
        key = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
        iam.create_login_profile(UserName="alice", Password="Not-a-real-1!")
        iam.create_user(UserName="bob")

        backend = iam_backends[ACCOUNT]["global"]
        backend.get_role("app").last_used = datetime(2026, 3, 1, tzinfo=UTC)
        backend.get_role("app").last_used_region = "eu-west-1"
        backend.get_user("alice").password_last_used = datetime(2026, 2, 1, tzinfo=UTC)
        yield {"key": key}


def test_roles_and_users_with_every_policy_they_hold(account: Any) -> None:
    session = AccountSession(
        Account(id=ACCOUNT, sources=("last_used",)), boto3.Session(region_name="us-east-1")
    )
    inventory = read_account(session)
    by_name = {p.name: p for p in inventory.principals}
    app, alice = by_name["app"], by_name["alice"]

    assert set(by_name) == {"app", "alice", "bob"}
    assert {(p.name, p.origin) for p in app.policies} == {
        ("own", "inline"),
        ("AmazonS3ReadOnlyAccess", "aws_managed"),
        ("shared-read", "managed"),
    }
    aws_managed = next(p for p in app.policies if p.origin == "aws_managed")
    assert "s3:Get*" in json.dumps(aws_managed.document)
    assert app.boundary_arn.endswith(":policy/boundary")
    assert all("boundary" not in p.name for p in app.policies)
    assert app.path == "/teams/" and app.tags == {"team": "payments"}
    assert app.last_used_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert {(p.name, p.origin) for p in alice.policies} == {
        ("ops-inline", "group_inline"),
        ("shared-read", "group_managed"),
    }
    shared = next(p for p in app.policies if p.name == "shared-read")
    assert shared.attached_to == (alice.arn,)


def test_keys_and_passwords_with_their_last_use(account: Any) -> None:
    session = AccountSession(
        Account(id=ACCOUNT, sources=("last_used",)), boto3.Session(region_name="us-east-1")
    )
    by_name = {p.name: p for p in read_account(session).principals}
    alice, bob = by_name["alice"], by_name["bob"]

    assert [k.key_id for k in alice.access_keys] == [account["key"]]
    assert alice.access_keys[0].last_used_at is None
    assert alice.login_profile is not None
    assert alice.login_profile.last_used_at == datetime(2026, 2, 1, tzinfo=UTC)
    assert bob.access_keys == [] and bob.login_profile is None
    assert not alice.read_problems and not bob.read_problems


def test_the_credential_report_replaces_per_user_reads(account: Any) -> None:
    session = AccountSession(
        Account(id=ACCOUNT, sources=("last_used",)), boto3.Session(region_name="us-east-1")
    )
    inventory = read_account(session, credential_report=True, sleep=lambda _: None)
    by_name = {p.name: p for p in inventory.principals}
    alice, bob = by_name["alice"], by_name["bob"]

    # Only alice has a key, so only she needs her key ids listed; nobody's password is asked.
    assert inventory.calls["iam:GetCredentialReport"] == 1
    assert inventory.calls["iam:ListAccessKeys"] == 1
    assert inventory.calls["iam:GetAccessKeyLastUsed"] == 0
    assert inventory.calls["iam:GetLoginProfile"] == inventory.calls["iam:GetUser"] == 0
    assert inventory.report_at is not None
    assert [(k.key_id, k.status) for k in alice.access_keys] == [(account["key"], "Active")]
    assert alice.login_profile is not None
    assert alice.login_profile.last_used_at == datetime(2026, 2, 1, tzinfo=UTC)
    assert bob.access_keys == [] and bob.login_profile is None


def test_a_report_that_is_not_ready_in_time_falls_back_to_per_user_reads() -> None:
    iam = boto3.client("iam", region_name="us-east-1", config=CLIENT_CONFIG)
    sleeps: list[float] = []
    with Stubber(iam) as stub:
        _pages(stub)
        # One poll, then one more after each wait the bounded backoff allows.
        for _ in range(len(list(backoff_delays(first=1.0, cap=10.0, total=REPORT_WAIT))) + 1):
            stub.add_response("generate_credential_report", {"State": "STARTED"})
        stub.add_response("list_access_keys", {"AccessKeyMetadata": []})
        stub.add_client_error("get_login_profile", service_error_code="NoSuchEntity")
        inventory = read_account(_StubbedSession(iam), credential_report=True, sleep=sleeps.append)

    assert 0 < sum(sleeps) <= 60
    assert inventory.report_at is None
    assert inventory.principals[1].read_problems == []


ROLE = {
    "RoleName": "r1",
    "RoleId": "AROAEXAMPLEEXAMPLE01",
    "Arn": f"arn:aws:iam::{ACCOUNT}:role/r1",
    "Path": "/",
    "CreateDate": datetime(2020, 1, 1, tzinfo=UTC),
    "RolePolicyList": [],
    "AttachedManagedPolicies": [],
    "RoleLastUsed": {},
}
USER = {
    "UserName": "u1",
    "UserId": "AIDAEXAMPLEEXAMPLE01",
    "Arn": f"arn:aws:iam::{ACCOUNT}:user/u1",
    "Path": "/",
    "CreateDate": datetime(2020, 1, 1, tzinfo=UTC),
    "GroupList": [],
    "AttachedManagedPolicies": [],
}


def _pages(stub: Stubber) -> None:
    stub.add_response(
        "get_account_authorization_details",
        {"RoleDetailList": [ROLE], "IsTruncated": True, "Marker": "page-2"},
    )
    stub.add_response(
        "get_account_authorization_details",
        {"UserDetailList": [USER], "IsTruncated": False},
        expected_params={
            "Filter": ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"],
            "MaxItems": 1000,
            "Marker": "page-2",
        },
    )


def test_every_page_is_followed_and_a_refused_read_fails_only_that_user() -> None:
    iam = boto3.client("iam", region_name="us-east-1", config=CLIENT_CONFIG)
    with Stubber(iam) as stub:
        _pages(stub)
        stub.add_client_error("list_access_keys", service_error_code="AccessDenied")
        stub.add_client_error("get_login_profile", service_error_code="NoSuchEntity")
        inventory = read_account(_StubbedSession(iam))
        stub.assert_no_pending_responses()
    role, user = inventory.principals

    assert inventory.calls["iam:GetAccountAuthorizationDetails"] == 2
    assert role.name == "r1" and role.read_problems == []
    assert user.name == "u1" and user.read_problems == ["access keys not readable: AccessDenied"]
    assert user.login_profile is None


def test_throttling_that_outlasts_the_retries_is_a_read_problem() -> None:
    iam = boto3.client("iam", region_name="us-east-1", config=CLIENT_CONFIG)
    with Stubber(iam) as stub:
        _pages(stub)
        stub.add_response(
            "list_access_keys",
            {"AccessKeyMetadata": [{"AccessKeyId": "AKIAEXAMPLE0000001", "Status": "Active"}]},
        )
        stub.add_client_error(
            "get_access_key_last_used", service_error_code="Throttling", http_status_code=400
        )
        stub.add_client_error("get_login_profile", service_error_code="NoSuchEntity")
        inventory = read_account(_StubbedSession(iam))
    user = inventory.principals[1]

    assert user.read_problems == ["access keys not readable: Throttling"]
    assert not user.last_used_known


def test_a_refused_listing_fails_the_account_naming_it() -> None:
    iam = boto3.client("iam", region_name="us-east-1", config=CLIENT_CONFIG)
    with Stubber(iam) as stub:
        stub.add_client_error(
            "get_account_authorization_details", service_error_code="AccessDenied"
        )
        with pytest.raises(AwsReadError, match=f"account {ACCOUNT}.*AccessDenied"):
            read_account(_StubbedSession(iam))
