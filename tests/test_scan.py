"""`pare scan` end to end: moto accounts, CloudTrail logs in S3, the real analysis, the database."""

from __future__ import annotations

import copy
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.iam.models import iam_backends
from sqlalchemy import func, select

import bot.aws.session as aws_session
from bot.db import Database
from bot.scan import run_scan
from bot.settings import Settings
from bot.teams import Account as AccountSpec
from models import Account, Finding, Principal, Scan
from tests.aws.conftest import fake_credentials  # noqa: F401  (the fixture, used below)
from tests.aws.helpers import EC2_TRUST, allow

pytestmark = pytest.mark.usefixtures("fake_credentials")

PAYMENTS, DATA, LOCKED = "111111111111", "222222222222", "333333333333"
TEAMS_YAML = f"""
accounts:
  - id: "{PAYMENTS}"
    name: payments-prod
    role_arn: arn:aws:iam::{PAYMENTS}:role/pare-reader
    external_id: pare-test
    cloudtrail: {{bucket: trail-{PAYMENTS}, prefix: logs/}}
  - id: "{DATA}"
    name: data-prod
    role_arn: arn:aws:iam::{DATA}:role/pare-reader
    cloudtrail: {{bucket: trail-{DATA}}}
  - id: "{LOCKED}"
    name: locked
    role_arn: arn:aws:iam::{LOCKED}:role/pare-reader
    sources: [last_used]
teams:
  - name: payments
    channel: C0PAYMENTS
    champions: [U0ALICE01]
    match: {{accounts: ["{PAYMENTS}"]}}
  - name: data
    channel: C0DATA0001
    champions: [U0BOB0001]
    match: {{names: ["data-*"]}}
"""
NOW = datetime.now(UTC).replace(microsecond=0)
# Principals moto creates today are judged half a year later, so they are old enough.
AS_OF = NOW + timedelta(days=200)
WINDOW_START = AS_OF - timedelta(days=90)


class Org:
    """The moto organisation: sessions into accounts, and CloudTrail files to deliver."""

    def __init__(self, realdata: Path):
        folder = realdata / "cloudtrail/invictus-ir_aws_dataset"
        records = [
            r for f in sorted(folder.iterdir()) for r in json.loads(f.read_bytes())["Records"]
        ]
        # A real record of a call, re-addressed to our principals and times.
        self.template = next(r for r in records if r["eventName"] == "ListBuckets")
        self.sts = boto3.client("sts", region_name="us-east-1")

    def session(self, account: str) -> boto3.Session:
        creds = self.sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/setup", RoleSessionName="setup"
        )["Credentials"]
        return boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name="us-east-1",
        )

    def call(self, account: str, role: str, source: str, name: str, at: datetime) -> dict:
        record = copy.deepcopy(self.template)
        record["eventSource"] = source
        record["eventName"] = name
        record["eventTime"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        record["recipientAccountId"] = account
        record["userIdentity"] = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/i-0abc",
            "accountId": account,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "arn": f"arn:aws:iam::{account}:role/{role}",
                    "accountId": account,
                    "userName": role,
                }
            },
        }
        return record

    def heartbeat(self, start: datetime, end: datetime) -> list[dict]:
        """Return an AWS service's call for each day from start to end: the trail was on."""
        records = []
        while start <= end:
            record = copy.deepcopy(self.template)
            record["eventTime"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
            record["userIdentity"] = {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}
            records.append(record)
            start += timedelta(days=1)
        return records

    def deliver(self, account: str, prefix: str, at: datetime, records: list[dict]) -> None:
        stamp = at.strftime("%Y%m%dT%H%MZ")
        key = (
            f"{prefix}AWSLogs/{account}/CloudTrail/us-east-1/{at:%Y/%m/%d}/"
            f"{account}_CloudTrail_us-east-1_{stamp}_{len(records)}x.json"
        )
        body = json.dumps({"Records": records}).encode()
        self.session(account).client("s3").put_object(Bucket=f"trail-{account}", Key=key, Body=body)


def _role(iam: Any, name: str, *actions: str, tags: dict[str, str] | None = None) -> None:
    iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=EC2_TRUST,
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    )
    iam.put_role_policy(RoleName=name, PolicyName="work", PolicyDocument=allow(*actions))


def _mark_used(account: str, *roles: str) -> None:
    # RoleLastUsed inside the window: the role itself is in use, so its grants are judged.
    backend = iam_backends[account]["global"]
    for name in roles:
        backend.get_role(name).last_used = AS_OF - timedelta(days=5)


@pytest.fixture
def org(realdata: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Org]:
    with mock_aws():
        org = Org(realdata)
        iam = org.session(PAYMENTS).client("iam")
        _role(iam, "checkout", "s3:ListAllMyBuckets", "sqs:ListQueues")
        iam.create_service_linked_role(AWSServiceName="elasticbeanstalk.amazonaws.com")
        iam.create_user(UserName="deploy-bot")
        iam.create_access_key(UserName="deploy-bot")
        _mark_used(PAYMENTS, "checkout")
        org.session(PAYMENTS).client("s3").create_bucket(Bucket=f"trail-{PAYMENTS}")

        iam = org.session(DATA).client("iam")
        _role(iam, "data-loader", "sqs:ListQueues")
        _role(iam, "orphan-job", "sqs:ListQueues")
        _mark_used(DATA, "data-loader", "orphan-job")
        org.session(DATA).client("s3").create_bucket(Bucket=f"trail-{DATA}")

        # The trail speaks from before the window to its end, on every day of it.
        before = WINDOW_START - timedelta(minutes=30)
        late = AS_OF - timedelta(hours=3)
        org.deliver(
            PAYMENTS,
            "logs/",
            before,
            [org.call(PAYMENTS, "checkout", "s3.amazonaws.com", "ListBuckets", before)]
            + org.heartbeat(before, late),
        )
        org.deliver(
            PAYMENTS,
            "logs/",
            late,
            [org.call(PAYMENTS, "checkout", "s3.amazonaws.com", "ListBuckets", late)],
        )
        org.deliver(
            DATA,
            "",
            before,
            [org.call(DATA, "data-loader", "sqs.amazonaws.com", "ListQueues", before)]
            + org.heartbeat(before, late),
        )
        org.deliver(
            DATA, "", late, [org.call(DATA, "data-loader", "sqs.amazonaws.com", "ListQueues", late)]
        )

        real_open = aws_session.open_account

        def open_account(account: AccountSpec, *args: Any, **kwargs: Any) -> Any:
            if account.id != LOCKED:
                return real_open(account, *args, **kwargs)
            sts = boto3.client("sts", region_name="us-east-1")
            with Stubber(sts) as stub:
                stub.add_client_error("assume_role", "AccessDenied", http_status_code=403)
                return real_open(account, sts=sts)

        monkeypatch.setattr(aws_session, "open_account", open_account)
        yield org


@pytest.fixture
def settings(tmp_path: Path, db: Database) -> Settings:
    teams = tmp_path / "teams.yaml"
    teams.write_text(TEAMS_YAML, encoding="utf-8")
    return Settings(DATABASE_URL=db.url, PARE_TEAMS_FILE=teams, PARE_WINDOW_DAYS=90)


def _open(db: Database) -> dict[tuple[str, str], Finding]:
    with db.session() as session:
        rows = session.execute(
            select(Principal.name, Finding)
            .join(Finding.principal)
            .where(Finding.closed_at.is_(None), Finding.status == "unused")
        ).all()
    return {(name, finding.key): finding for name, finding in rows}


def test_a_scan_records_findings_per_account_and_reports_the_unreadable_one(
    org: Org, settings: Settings, db: Database
) -> None:
    report = run_scan(settings, as_of=AS_OF)
    summary = report.summary()

    assert not report.ok
    assert set(_open(db)) == {
        ("checkout", "unused_permission:sqs"),
        ("deploy-bot", "unused_access_key:" + _key_id(db, "deploy-bot")),
        ("orphan-job", "unused_permission:sqs"),
    }
    assert "payments-prod (111111111111): 3 principals read; findings 2 open, 2 new" in summary
    assert "data-prod (222222222222): 2 principals read; findings 1 open, 1 new" in summary
    assert "1 unowned principal: orphan-job" in summary
    assert "locked (333333333333): not scanned" in summary and "AccessDenied" in summary
    with db.session() as session:
        locked = session.scalars(select(Account).where(Account.account_id == LOCKED)).one()
        scans = {s.account_id: s for s in session.scalars(select(Scan))}
        linked = session.scalars(
            select(Principal.data_state).where(Principal.path.like("/aws-service-role/%"))
        ).all()
        teams = dict(session.execute(select(Principal.name, Principal.team_id)).all())
    assert locked.last_scan_status == "failed" and "AccessDenied" in locked.last_scan_error
    assert scans[locked.id].status == "failed" and scans[locked.id].finished_at is not None
    assert sorted(s.status for s in scans.values()) == ["failed", "ok", "ok"]
    assert linked == ["excluded"]
    assert teams["orphan-job"] is None and teams["data-loader"] is not None


def _key_id(db: Database, user: str) -> str:
    with db.session() as session:
        finding = session.scalars(
            select(Finding).join(Finding.principal).where(Principal.name == user)
        ).first()
    return finding.resource_id if finding else ""


def test_a_rescan_updates_in_place_closes_what_was_used_again_and_what_is_gone(
    org: Org, settings: Settings, db: Database
) -> None:
    run_scan(settings, as_of=AS_OF)
    before = _open(db)
    with db.session() as session:
        rows_before = session.scalar(select(func.count(Finding.id)))

    later = AS_OF + timedelta(days=1)
    moment = later - timedelta(hours=3)
    call = org.call(PAYMENTS, "checkout", "sqs.amazonaws.com", "ListQueues", moment)
    org.deliver(PAYMENTS, "logs/", moment, [call])
    call = org.call(DATA, "data-loader", "sqs.amazonaws.com", "ListQueues", moment)
    org.deliver(DATA, "", moment, [call])
    org.session(DATA).client("iam").delete_role_policy(RoleName="orphan-job", PolicyName="work")
    org.session(DATA).client("iam").delete_role(RoleName="orphan-job")
    report = run_scan(settings, as_of=later, accounts=[PAYMENTS, DATA])

    after = _open(db)
    with db.session() as session:
        rows_after = session.scalar(select(func.count(Finding.id)))
        closed = dict(
            session.execute(
                select(Principal.name, Finding.closed_reason)
                .join(Finding.principal)
                .where(Finding.closed_at.is_not(None))
            ).all()
        )
        gone = session.scalars(select(Principal).where(Principal.gone_at.is_not(None))).all()
    assert report.ok
    assert set(after) == {k for k in before if k[0] == "deploy-bot"}
    key = next(k for k in before if k[0] == "deploy-bot")
    assert after[key].id == before[key].id
    assert rows_after == rows_before
    assert closed == {"checkout": "used_again", "orphan-job": "principal_gone"}
    assert [p.name for p in gone] == ["orphan-job"]
    assert "1 closed" in report.summary()


def test_incomplete_data_closes_nothing(org: Org, settings: Settings, db: Database) -> None:
    run_scan(settings, as_of=AS_OF, accounts=[PAYMENTS])
    opened = {k: f.id for k, f in _open(db).items()}

    broken_at = AS_OF - timedelta(days=1)
    key = f"logs/AWSLogs/{PAYMENTS}/CloudTrail/us-east-1/{broken_at:%Y/%m/%d}/broken.json.gz"
    org.session(PAYMENTS).client("s3").put_object(
        Bucket=f"trail-{PAYMENTS}", Key=key, Body=b"\x1f\x8bcut short"
    )
    report = run_scan(settings, as_of=AS_OF + timedelta(days=1), accounts=[PAYMENTS])

    with db.session() as session:
        findings = session.scalars(select(Finding).where(Finding.id.in_(opened.values()))).all()
        states = {p.name: p.data_state for p in session.scalars(select(Principal))}
    assert all(f.closed_at is None for f in findings)
    assert states["checkout"] == "incomplete"
    assert "broken.json.gz" in report.summary() or "incomplete" in report.summary()


def test_progress_one_line_per_account_and_resume_skips_what_is_done(
    org: Org, settings: Settings, db: Database
) -> None:
    from bot.scan import read_from_aws

    progress = io.StringIO()
    run_scan(settings, as_of=AS_OF, progress=progress)
    lines = progress.getvalue().splitlines()

    assert len(lines) == 3 and all(line.startswith(("[1/3]", "[2/3]", "[3/3]")) for line in lines)
    assert any("payments-prod (111111111111): 3 principals, 2 open findings" in x for x in lines)
    assert any("locked (333333333333): failed" in x for x in lines)

    read: list[str] = []

    def counting(spec: AccountSpec, as_of: datetime, window: int) -> Any:
        read.append(spec.id)
        return read_from_aws(spec, as_of, window)

    progress = io.StringIO()
    report = run_scan(settings, as_of=AS_OF, reader=counting, resume=True, progress=progress)

    # Only the account that failed is read again; the others are done for this day.
    assert read == [LOCKED]
    assert "payments-prod (111111111111): already scanned in this period" in report.summary()
    assert progress.getvalue().count("skipped, already scanned") == 2
    with db.session() as session:
        periods = {s.stats.get("period") for s in session.scalars(select(Scan)) if s.stats}
    assert periods == {AS_OF.date().isoformat()}

    read.clear()
    run_scan(settings, as_of=AS_OF + timedelta(days=1), reader=counting, resume=True)
    assert sorted(read) == [PAYMENTS, DATA, LOCKED]


def _quiet_reader(barrier: threading.Barrier | None = None) -> Any:
    from bot.scan import AccountRead

    def reader(spec: AccountSpec, as_of: datetime, window: int) -> AccountRead:
        if barrier is not None and spec.id != LOCKED:
            # Returns only once two accounts are being read at the same time.
            barrier.wait()
        if spec.id == DATA:
            raise RuntimeError("boom")
        return AccountRead([], {})

    return reader


def test_accounts_are_read_concurrently_and_one_failure_stops_no_other(
    settings: Settings, db: Database
) -> None:
    barrier = threading.Barrier(2, timeout=10)
    report = run_scan(settings, as_of=AS_OF, reader=_quiet_reader(barrier), concurrency=2)

    states = {a.account_id: (a.ok, a.error) for a in report.accounts}
    assert states[DATA] == (False, "unexpected error (RuntimeError)")
    assert states[PAYMENTS][0] and states[LOCKED][0]
    assert [a.account_id for a in report.accounts] == [PAYMENTS, DATA, LOCKED]


def test_accounts_found_in_the_organisation_are_scanned_too(tmp_path: Path, db: Database) -> None:
    teams = tmp_path / "teams.yaml"
    teams.write_text(
        TEAMS_YAML
        + "organization:\n  role_name: pare-reader\n  ous: [ou-abcd-11111111]\n"
        + "  tags: {pare: scan}\n",
        encoding="utf-8",
    )
    settings = Settings(DATABASE_URL=db.url, PARE_TEAMS_FILE=teams, PARE_WINDOW_DAYS=90)
    org = settings.teams.organization
    member = org.account("444444444444", "member")
    report = run_scan(
        settings,
        as_of=AS_OF,
        reader=_quiet_reader(),
        discover=lambda found: [found.account(PAYMENTS, "again"), member],
    )

    assert [a.account_id for a in report.accounts] == [PAYMENTS, DATA, LOCKED, "444444444444"]
    assert member.role_arn == "arn:aws:iam::444444444444:role/pare-reader"
    with db.session() as session:
        names = dict(session.execute(select(Account.account_id, Account.name)).all())
    assert names["444444444444"] == "member" and names[PAYMENTS] == "payments-prod"

    def refused(found: Any) -> list:
        from bot.errors import AwsReadError

        raise AwsReadError("organization", "organizations:ListAccounts", "AccessDenied")

    report = run_scan(settings, as_of=AS_OF, reader=_quiet_reader(), discover=refused)
    assert not report.ok and "AccessDenied" in report.summary()
    assert len(report.accounts) == 3


def test_the_analyzer_speaks_first_and_access_advisor_only_without_one(
    org: Org, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.aws.access_advisor as advisor_module
    import bot.aws.access_analyzer as analyzer_module
    from bot.aws.access_advisor import AdvisorRead
    from bot.aws.access_analyzer import AnalyzerRead
    from bot.evidence.access_analyzer import Analyzer

    teams = tmp_path / "teams.yaml"
    teams.write_text(
        f"""
accounts:
  - id: "{PAYMENTS}"
    role_arn: arn:aws:iam::{PAYMENTS}:role/pare-reader
    sources: [last_used, access_analyzer, access_advisor]
teams:
  - name: payments
    channel: C0PAYMENTS
    champions: [U0ALICE01]
""",
        encoding="utf-8",
    )
    settings = Settings(DATABASE_URL=db.url, PARE_TEAMS_FILE=teams, PARE_WINDOW_DAYS=90)
    checkout = f"arn:aws:iam::{PAYMENTS}:role/checkout"
    analyzer = Analyzer("arn:aws:access-analyzer:us-east-1:1:analyzer/a", "ACCOUNT_UNUSED_ACCESS",
                        90, analyzed_at=AS_OF - timedelta(hours=1))  # fmt: skip
    finding = {
        "id": "f-1",
        "resource": checkout,
        "findingType": "UnusedPermission",
        "findingDetails": [{"unusedPermissionDetails": {"serviceNamespace": "sqs"}}],
        "recommendation": {"status": "SUCCEEDED", "recommendedSteps": []},
    }
    asked: list[list[str]] = []

    def advisor(session: Any, principals: Any, **kw: Any) -> AdvisorRead:
        asked.append([p.name for p in principals])
        return AdvisorRead()

    found = AnalyzerRead(PAYMENTS, analyzer=analyzer, findings=[finding])
    monkeypatch.setattr(analyzer_module, "read_unused_access", lambda session: found)
    monkeypatch.setattr(advisor_module, "read_last_accessed", advisor)
    report = run_scan(settings, as_of=AS_OF)

    opened = _open(db)
    assert report.ok and asked == []
    sqs = opened[("checkout", "unused_permission:sqs")]
    assert sqs.source == "access_analyzer"
    assert sqs.detail["access_analyzer"]["finding_id"] == "f-1"
    assert "Access Analyzer: 1 findings" in report.summary()

    monkeypatch.setattr(
        analyzer_module, "read_unused_access", lambda session: AnalyzerRead(PAYMENTS)
    )
    run_scan(settings, as_of=AS_OF)
    # Without an analyzer Access Advisor is asked, but not for AWS's own roles.
    assert asked and "checkout" in asked[0]
    assert not any(name.startswith("AWSServiceRoleFor") for name in asked[0])


ADMIN = "999999999999"
ORG_ANALYZER = f"arn:aws:access-analyzer:us-east-1:{ADMIN}:analyzer/org-unused"
OWN_ANALYZER = f"arn:aws:access-analyzer:us-east-1:{PAYMENTS}:analyzer/own"
ORG_TEAMS_YAML = f"""
organization:
  role_name: pare-reader
  sources: [last_used, access_analyzer]
  analyzer_account: "{ADMIN}"
teams:
  - name: payments
    channel: C0PAYMENTS
    champions: [U0ALICE01]
    match: {{accounts: ["{PAYMENTS}"]}}
  - name: data
    channel: C0DATA0001
    champions: [U0BOB0001]
    match: {{accounts: ["{DATA}"]}}
"""
FINDING_TYPES = ["UnusedIAMRole", "UnusedIAMUserAccessKey", "UnusedIAMUserPassword"]
FINDING_TYPES.append("UnusedPermission")


def _analyzer_summary(arn: str, kind: str) -> dict[str, Any]:
    return {
        "arn": arn,
        "name": arn.rsplit("/", 1)[-1],
        "type": kind,
        "createdAt": NOW - timedelta(days=400),
        "lastResourceAnalyzedAt": AS_OF - timedelta(hours=1),
        "status": "ACTIVE",
        "configuration": {"unusedAccess": {"unusedAccessAge": 90}},
    }


def _org_finding(account: str, role: str, finding_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": finding_id,
        "resource": f"arn:aws:iam::{account}:role/{role}",
        "resourceType": "AWS::IAM::Role",
        "resourceOwnerAccount": account,
        "status": "ACTIVE",
        "findingType": "UnusedPermission",
        "analyzedAt": AS_OF - timedelta(hours=1),
        "createdAt": AS_OF - timedelta(days=10),
        "updatedAt": AS_OF - timedelta(hours=1),
        **extra,
    }


def _list_org_findings(
    stub: Stubber, pages: list[list[dict[str, Any]]], *, more: bool = False
) -> None:
    """Stub the admin's ListAnalyzers and ListFindingsV2 pages (`more`: the last says more)."""
    criteria = {
        "resourceOwnerAccount": {"eq": [PAYMENTS, DATA]},
        "status": {"eq": ["ACTIVE"]},
        "findingType": {"eq": FINDING_TYPES},
    }
    stub.add_response(
        "list_analyzers",
        {"analyzers": [_analyzer_summary(ORG_ANALYZER, "ORGANIZATION_UNUSED_ACCESS")]},
        expected_params={"type": "ORGANIZATION_UNUSED_ACCESS"},
    )
    params: dict[str, Any] = {"analyzerArn": ORG_ANALYZER, "filter": criteria, "maxResults": 100}
    for n, findings in enumerate(pages, start=1):
        page: dict[str, Any] = {"findings": findings}
        if n < len(pages) or more:
            page["nextToken"] = f"page-{n + 1}"
        stub.add_response("list_findings_v2", page, expected_params=params)
        params = {**params, "nextToken": f"page-{n + 1}"}


def _read_org_finding(stub: Stubber, summary: dict[str, Any], service: str) -> None:
    """Stub GetFindingV2 and a finished recommendation, both asked of the delegated admin."""
    params = {"analyzerArn": ORG_ANALYZER, "id": summary["id"]}
    detail = {"unusedPermissionDetails": {"serviceNamespace": service}}
    stub.add_response(
        "get_finding_v2", {**summary, "findingDetails": [detail]}, expected_params=params
    )
    stub.add_response("generate_finding_recommendation", {}, expected_params=params)
    stub.add_response(
        "get_finding_recommendation",
        {
            "startedAt": AS_OF,
            "resourceArn": summary["resource"],
            "recommendationType": "UnusedPermissionRecommendation",
            "status": "SUCCEEDED",
            "recommendedSteps": [],
        },
        expected_params=params,
    )


def _org_scan(
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    stub_admin: Any,
    own: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[Any, list[float]]:
    """Scan PAYMENTS and DATA as organisation members, the admin's analyzer stubbed."""
    import bot.aws.access_analyzer as analyzer_module
    from bot.aws.access_analyzer import read_organization_unused_access, read_unused_access
    from bot.aws.session import CLIENT_CONFIG, AccountSession

    teams = tmp_path / "teams.yaml"
    teams.write_text(ORG_TEAMS_YAML, encoding="utf-8")
    settings = Settings(DATABASE_URL=db.url, PARE_TEAMS_FILE=teams, PARE_WINDOW_DAYS=90)
    sleeps: list[float] = []

    def client() -> Any:
        return boto3.client("accessanalyzer", region_name="us-east-1", config=CLIENT_CONFIG)

    def own_analyzers(session: Any) -> Any:
        # Each member's own ListAnalyzers, on a stubbed client of its own.
        member = client()
        with Stubber(member) as stub:
            analyzers = (own or {}).get(session.account.id, [])
            stub.add_response("list_analyzers", {"analyzers": analyzers})
            if analyzers:
                stub.add_response("list_findings_v2", {"findings": []})
            read = read_unused_access(session, client=member, sleep=sleeps.append)
            stub.assert_no_pending_responses()
        return read

    monkeypatch.setattr(analyzer_module, "read_unused_access", own_analyzers)
    admin = client()
    with Stubber(admin) as stub:
        stub_admin(stub)

        def organization_analyzer(found: Any, accounts: list[str]) -> Any:
            session = AccountSession(found.analyzer_admin(), boto3.Session())
            return read_organization_unused_access(
                session, accounts, client=admin, sleep=sleeps.append
            )

        report = run_scan(
            settings,
            as_of=AS_OF,
            # One account at a time: the stubbed admin client answers in order.
            concurrency=1,
            discover=lambda found: [
                found.account(PAYMENTS, "payments-prod"),
                found.account(DATA, "data-prod"),
            ],
            organization_analyzer=organization_analyzer,
        )
        stub.assert_no_pending_responses()
    return report, sleeps


def test_the_organisation_analyzer_is_read_once_and_each_member_gets_its_own_findings(
    org: Org, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = _org_finding(PAYMENTS, "checkout", "org-1")
    loader = _org_finding(DATA, "data-loader", "org-2")
    orphan = _org_finding(DATA, "orphan-job", "org-3")

    def admin(stub: Stubber) -> None:
        # Findings of both accounts on both pages; each account's are then read in turn.
        _list_org_findings(stub, [[checkout, loader], [orphan]])
        _read_org_finding(stub, checkout, "sqs")
        _read_org_finding(stub, loader, "sqs")
        _read_org_finding(stub, orphan, "sqs")

    report, _ = _org_scan(tmp_path, db, monkeypatch, admin)

    assert report.ok, report.summary()
    # The never-used key of deploy-bot is the credential report's finding, not the analyzer's.
    opened = {k: f for k, f in _open(db).items() if f.source == "access_analyzer"}
    assert set(opened) == {
        ("checkout", "unused_permission:sqs"),
        ("data-loader", "unused_permission:sqs"),
        ("orphan-job", "unused_permission:sqs"),
    }
    assert {f.detail["access_analyzer"]["analyzer_arn"] for f in opened.values()} == {ORG_ANALYZER}
    with db.session() as session:
        owners = dict(
            session.execute(
                select(Principal.name, Account.account_id).join(
                    Account, Principal.account_id == Account.id
                )
            ).all()
        )
    assert owners["checkout"] == PAYMENTS and owners["orphan-job"] == DATA
    by_account = {a.account_id: a for a in report.accounts}
    assert "Access Analyzer: 1 findings" in (by_account[PAYMENTS].trail or "")
    assert "Access Analyzer: 2 findings" in (by_account[DATA].trail or "")
    assert f"in delegated administrator {ADMIN}" in (by_account[DATA].trail or "")
    assert report.summary().startswith(f"organisation analyzer {ORG_ANALYZER}")


def test_a_throttled_organisation_page_fails_every_member_closed(
    org: Org, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = _org_finding(PAYMENTS, "checkout", "org-1")

    def admin(stub: Stubber) -> None:
        # The first page says there is a second; asking for it is throttled until Pare stops.
        _list_org_findings(stub, [[checkout]], more=True)
        for _ in range(4):
            stub.add_client_error(
                "list_findings_v2", service_error_code="ThrottlingException", http_status_code=429
            )

    report, sleeps = _org_scan(tmp_path, db, monkeypatch, admin)

    assert len(sleeps) == 3
    assert not report.ok
    assert any("ThrottlingException" in p for p in report.problems)
    assert _open(db) == {}
    with db.session() as session:
        states = dict(session.execute(select(Principal.name, Principal.data_state)).all())
    judged = {k: v for k, v in states.items() if v != "excluded"}
    assert set(judged) >= {"checkout", "data-loader", "orphan-job"}
    assert set(judged.values()) == {"incomplete"}
    for account in report.accounts:
        assert any("ThrottlingException" in p for p in account.problems)


def test_a_member_with_its_own_analyzer_is_judged_by_its_own(
    org: Org, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = _org_finding(PAYMENTS, "checkout", "org-1")
    loader = _org_finding(DATA, "data-loader", "org-2")

    def admin(stub: Stubber) -> None:
        # PAYMENTS's finding is listed but never read: its own analyzer speaks for it.
        _list_org_findings(stub, [[checkout, loader]])
        _read_org_finding(stub, loader, "sqs")

    own = {PAYMENTS: [_analyzer_summary(OWN_ANALYZER, "ACCOUNT_UNUSED_ACCESS")]}
    report, _ = _org_scan(tmp_path, db, monkeypatch, admin, own=own)

    assert report.ok, report.summary()
    from_analyzers = {k for k, f in _open(db).items() if f.source == "access_analyzer"}
    assert from_analyzers == {("data-loader", "unused_permission:sqs")}
    by_account = {a.account_id: a for a in report.accounts}
    assert f"(analyzer {OWN_ANALYZER})" in (by_account[PAYMENTS].trail or "")
    assert f"(organisation analyzer {ORG_ANALYZER}" in (by_account[DATA].trail or "")
