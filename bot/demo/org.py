"""A sample organisation in moto: three accounts, three teams, real AWS managed policies.

Everything is created through the ordinary IAM and S3 APIs, as a real organisation would be.
Only the ages are set afterwards: moto has no API to backdate a role, key or password, and
treats the `create_date` and `last_used` fields of its models as public for this purpose.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import boto3

REGION = "us-east-1"
READER_ROLE = "PareReader"
TRAIL_BUCKET = "pare-demo-cloudtrail-{account}"

PAYMENTS = "111122223333"
DATA = "444455556666"
TOOLS = "777788889999"
ACCOUNT_NAMES = {PAYMENTS: "payments-prod", DATA: "data-prod", TOOLS: "shared-tools"}

CHANNELS = {"payments": "C0PAYMENTS", "data": "C0DATA", "platform": "C0PLATFORM"}
CHAMPIONS = {"payments": ["U0PAYCHAMP"], "data": ["U0DATACHAMP"], "platform": ["U0PLATCHAMP"]}
BYSTANDER = "U0BYSTANDER"
LEADERBOARD_CHANNEL = "C0LEADERS"

TRUST_EC2 = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass
class RoleSpec:
    """A sample role: its policies, its age, and which services it calls."""

    account: str
    name: str
    managed: list[str] = field(default_factory=list)
    inline: dict[str, list[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    path: str = "/"
    age_days: int = 400
    last_used_days: int | None = 2
    calls: list[str] = field(default_factory=list)


@dataclass
class KeySpec:
    """A sample access key: its age and when it was last used."""

    age_days: int
    last_used_days: int | None


@dataclass
class UserSpec:
    """A sample user with keys and maybe a console password."""

    account: str
    name: str
    keys: list[KeySpec] = field(default_factory=list)
    # moto dates a login profile from its user, so a password is as old as its user here.
    password: bool = False
    password_last_used_days: int | None = None
    managed: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    age_days: int = 500
    calls: list[str] = field(default_factory=list)


AWS = "arn:aws:iam::aws:policy/"

ROLES = [
    RoleSpec(
        PAYMENTS,
        "payments-api",
        managed=[AWS + "AmazonS3ReadOnlyAccess", AWS + "AmazonDynamoDBReadOnlyAccess"],
        inline={
            "payments-secrets": [
                "kms:Decrypt",
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret",
                "ssm:GetParameter",
                "ssm:DescribeParameters",
                "sqs:ListQueues",
                "iam:PassRole",
            ]
        },
        tags={"team": "payments"},
        calls=["s3", "kms", "secretsmanager", "ssm"],
    ),
    RoleSpec(
        PAYMENTS,
        "payments-batch-legacy",
        managed=[AWS + "AmazonSQSReadOnlyAccess"],
        tags={"team": "payments"},
        last_used_days=200,
    ),
    RoleSpec(
        PAYMENTS,
        "payments-new-worker",
        managed=[AWS + "AmazonSNSReadOnlyAccess"],
        tags={"team": "payments", "note": "<!channel> ping <https://example.com|click here>"},
        age_days=10,
        last_used_days=None,
    ),
    RoleSpec(
        PAYMENTS,
        "AWSServiceRoleForSupport",
        managed=[],
        path="/aws-service-role/support.amazonaws.com/",
        last_used_days=None,
    ),
    RoleSpec(
        PAYMENTS,
        "AWSReservedSSO_AdministratorAccess_0a1b2c3d4e5f6a7b",
        managed=[AWS + "AdministratorAccess"],
        path="/aws-reserved/sso.amazonaws.com/",
    ),
    RoleSpec(
        PAYMENTS,
        "experiment-sandbox",
        managed=[AWS + "AmazonEC2ReadOnlyAccess"],
        calls=["ec2"],
    ),
    RoleSpec(
        DATA,
        "data-etl",
        managed=[
            AWS + "AmazonEC2ReadOnlyAccess",
            AWS + "AmazonRDSReadOnlyAccess",
            AWS + "IAMReadOnlyAccess",
            AWS + "CloudWatchLogsReadOnlyAccess",
        ],
        calls=["ec2", "rds", "iam"],
    ),
    RoleSpec(
        TOOLS,
        "lambda-deployer",
        managed=[AWS + "AWSLambda_FullAccess"],
        calls=["lambda", "s3"],
    ),
]

USERS = [
    UserSpec(
        DATA,
        "data-analyst",
        keys=[KeySpec(age_days=300, last_used_days=150), KeySpec(age_days=200, last_used_days=3)],
        password=True,
        password_last_used_days=None,
        managed=[AWS + "AmazonAthenaFullAccess"],
        calls=["s3"],
    ),
    UserSpec(
        TOOLS,
        "ci-deployer",
        keys=[KeySpec(age_days=20, last_used_days=1)],
        managed=[AWS + "AWSCodeBuildReadOnlyAccess"],
        age_days=20,
    ),
]


def teams_file(as_of: datetime) -> dict[str, Any]:
    """Return the demo's teams file, as it would be written by an operator."""
    accounts = []
    for account_id, name in ACCOUNT_NAMES.items():
        accounts.append(
            {
                "id": account_id,
                "name": name,
                "role_arn": f"arn:aws:iam::{account_id}:role/{READER_ROLE}",
                "sources": ["last_used", "cloudtrail"],
                "cloudtrail": {"bucket": TRAIL_BUCKET.format(account=account_id)},
                "apply": False,
            }
        )
    weekday = as_of.strftime("%A").lower()
    return {
        "accounts": accounts,
        "admins": ["U0SECADMIN"],
        "leaderboard_channel": LEADERBOARD_CHANNEL,
        "teams": [
            {
                "name": "payments",
                "channel": CHANNELS["payments"],
                "champions": CHAMPIONS["payments"],
                "timezone": "Europe/Berlin",
                "digest": {"day": weekday, "hour": 9},
                "match": {"tags": {"team": "payments"}},
            },
            {
                "name": "data",
                "channel": CHANNELS["data"],
                "champions": CHAMPIONS["data"],
                "timezone": "America/New_York",
                "digest": {"day": weekday, "hour": 10},
                "match": {"accounts": [DATA], "names": ["data-*"]},
            },
            {
                "name": "platform",
                "channel": CHANNELS["platform"],
                "champions": CHAMPIONS["platform"],
                "timezone": "Australia/Sydney",
                "digest": {"day": "daily", "hour": 8},
                "match": {"accounts": [TOOLS]},
            },
        ],
    }


def _client(service: str, account: str) -> Any:
    sts = boto3.client("sts", region_name=REGION)
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
        RoleSessionName="pare-demo-setup",
    )["Credentials"]
    return boto3.client(
        service,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _backdate(account: str, as_of: datetime) -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account]["global"]


def _sample_records() -> list[dict[str, Any]]:
    text = resources.files("bot.demo").joinpath("data/cloudtrail_sample.json").read_text()
    return json.loads(text)["Records"]


def _trail_files(
    account: str, identities: list[tuple[dict[str, Any], list[str]]], as_of: datetime
) -> dict[str, bytes]:
    """Give each sample record to the principals that call its service; one file per day."""
    rng = random.Random(account)
    records = _sample_records()
    by_day: dict[str, list[dict[str, Any]]] = {}
    for identity, services in identities:
        for record in records:
            if record["eventSource"].split(".")[0] not in services:
                continue
            when = as_of - timedelta(days=rng.randint(1, 60), minutes=rng.randint(0, 1439))
            entry = dict(record, userIdentity=identity, recipientAccountId=account)
            entry["eventTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            by_day.setdefault(when.strftime("%Y/%m/%d"), []).append(entry)
    # Pare's own reader role reads IAM every day, so the trail has a record every day, from
    # before the tracking window opened until now.
    reader = f"arn:aws:iam::{account}:role/{READER_ROLE}"
    for days_ago in range(0, 121):
        when = as_of - timedelta(days=days_ago, hours=1)
        entry = dict(records[0], eventSource="iam.amazonaws.com")
        entry["eventName"] = "GetAccountAuthorizationDetails"
        entry["userIdentity"] = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{account}:assumed-role/{READER_ROLE}/pare",
            "accountId": account,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": reader}},
        }
        entry["eventTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        entry["recipientAccountId"] = account
        by_day.setdefault(when.strftime("%Y/%m/%d"), []).append(entry)
    files = {}
    for day, day_records in sorted(by_day.items()):
        day_records.sort(key=lambda r: r["eventTime"])
        stamp = day.replace("/", "")
        key = (
            f"AWSLogs/{account}/CloudTrail/{REGION}/{day}/"
            f"{account}_CloudTrail_{REGION}_{stamp}T0000Z_demo.json.gz"
        )
        files[key] = gzip.compress(json.dumps({"Records": day_records}).encode())
    return files


def build(as_of: datetime) -> dict[str, Any]:
    """Create the sample organisation in the active moto mock; return what it holds."""
    identities: dict[str, list[tuple[dict[str, Any], list[str]]]] = {a: [] for a in ACCOUNT_NAMES}
    for account in ACCOUNT_NAMES:
        iam = _client("iam", account)
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam.create_role(RoleName=READER_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
        iam.attach_role_policy(RoleName=READER_ROLE, PolicyArn=AWS + "SecurityAudit")
        reader = next(r for r in _backdate(account, as_of).roles.values() if r.name == READER_ROLE)
        reader.create_date = as_of - timedelta(days=400)
        reader.last_used = as_of - timedelta(hours=1)
        _client("s3", account).create_bucket(Bucket=TRAIL_BUCKET.format(account=account))

    for spec in ROLES:
        iam = _client("iam", spec.account)
        iam.create_role(
            RoleName=spec.name,
            Path=spec.path,
            AssumeRolePolicyDocument=json.dumps(TRUST_EC2),
            Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
        )
        for arn in spec.managed:
            iam.attach_role_policy(RoleName=spec.name, PolicyArn=arn)
        for name, actions in spec.inline.items():
            doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions}]}
            doc["Statement"][0]["Resource"] = "*"
            iam.put_role_policy(RoleName=spec.name, PolicyName=name, PolicyDocument=json.dumps(doc))
        role = next(r for r in _backdate(spec.account, as_of).roles.values() if r.name == spec.name)
        role.create_date = as_of - timedelta(days=spec.age_days)
        if spec.last_used_days is not None:
            role.last_used = as_of - timedelta(days=spec.last_used_days)
            role.last_used_region = REGION
        if spec.calls:
            arn = f"arn:aws:iam::{spec.account}:role{spec.path}{spec.name}"
            identity = {
                "type": "AssumedRole",
                "arn": f"arn:aws:sts::{spec.account}:assumed-role/{spec.name}/demo-session",
                "accountId": spec.account,
                "sessionContext": {
                    "sessionIssuer": {"type": "Role", "arn": arn, "userName": spec.name}
                },
            }
            identities[spec.account].append((identity, spec.calls))

    for spec in USERS:
        iam = _client("iam", spec.account)
        iam.create_user(
            UserName=spec.name, Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()]
        )
        for arn in spec.managed:
            iam.attach_user_policy(UserName=spec.name, PolicyArn=arn)
        key_ids = [
            iam.create_access_key(UserName=spec.name)["AccessKey"]["AccessKeyId"] for _ in spec.keys
        ]
        if spec.password:
            iam.create_login_profile(UserName=spec.name, Password="Demo-password-not-real-1!")
        backend = _backdate(spec.account, as_of)
        user = backend.users[spec.name]
        user.create_date = as_of - timedelta(days=spec.age_days)
        if spec.password_last_used_days is not None:
            user.password_last_used = as_of - timedelta(days=spec.password_last_used_days)
        for key_id, key_spec in zip(key_ids, spec.keys, strict=True):
            key = backend.access_keys[key_id]
            key.create_date = as_of - timedelta(days=key_spec.age_days)
            if key_spec.last_used_days is not None:
                from moto.iam.models import AccessKeyLastUsed

                key.last_used = AccessKeyLastUsed(
                    timestamp=as_of - timedelta(days=key_spec.last_used_days),
                    service="s3",
                    region=REGION,
                )
        if spec.calls:
            identity = {
                "type": "IAMUser",
                "arn": f"arn:aws:iam::{spec.account}:user/{spec.name}",
                "accountId": spec.account,
                "userName": spec.name,
            }
            identities[spec.account].append((identity, spec.calls))

    files_written = 0
    for account, account_identities in identities.items():
        s3 = _client("s3", account)
        for key, body in _trail_files(account, account_identities, as_of).items():
            s3.put_object(Bucket=TRAIL_BUCKET.format(account=account), Key=key, Body=body)
            files_written += 1
    return {
        "accounts": len(ACCOUNT_NAMES),
        "roles": len(ROLES),
        "users": len(USERS),
        "trail_files": files_written,
    }
