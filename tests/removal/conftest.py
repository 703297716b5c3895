"""A moto account with AWS managed policies, the real scan, approvals, and an IAM client that
can be made to crash after any write."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import moto.iam.models as moto_iam
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.iam.models import iam_backends
from sqlalchemy import select

from bot.aws import inventory
from bot.aws.iam_write import IamWriter
from bot.aws.inventory import read_account
from bot.aws.session import open_account
from bot.catalog import catalogue
from bot.db import Database
from bot.digest import shown_for
from bot.domain import UsageEvidence
from bot.removal import policy as P
from bot.scan import AccountRead, run_scan
from bot.settings import Settings
from bot.teams import Account as AccountSpec
from models import Decision, Finding, Principal
from tests.aws.conftest import fake_credentials  # noqa: F401  (the fixture, used below)

ACCOUNT = "123456789012"
CHAMPION = "U0ALICE01"
NOW = datetime.now(UTC).replace(microsecond=0)
# Principals moto creates today are judged half a year later, so they are old enough.
AS_OF = NOW + timedelta(days=200)
TEAMS_YAML = f"""
accounts:
  - id: "{ACCOUNT}"
    name: sandbox
    sources: [last_used]
teams:
  - name: payments
    channel: C0PAYMENTS
    champions: [{CHAMPION}]
    match: {{accounts: ["{ACCOUNT}"]}}
"""
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


# The AWS managed policies the tests attach (AWSDenyAll through the quarantine), with moto's
# real documents. moto builds every one of its 1,300 for each IAM backend it creates, a dozen
# per test, which was half of each test's time; the others are never read here.
USED_AWS_MANAGED = ("AmazonS3ReadOnlyAccess", "AWSDenyAll")


class Crash(Exception):
    """The process dying right after AWS acted, before Pare recorded it."""


class CrashingIam:
    """An IAM client that counts writes, checks an invariant after each, and can crash."""

    def __init__(self, client: Any, check: Callable[[str], None], crash_after: int | None = None):
        self._client = client
        self._check = check
        self.crash_after = crash_after
        # name -> (error code, the parameters a call must carry to be refused)
        self.refuse: dict[str, tuple[str, dict[str, Any]]] = {}
        self.writes: list[str] = []
        self.params: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith(("get_", "list_", "can_")):
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            code, match = self.refuse.get(name, ("", {}))
            if code and all(kwargs.get(k) == v for k, v in match.items()):
                error = {"Error": {"Code": code, "Message": "refused in the test"}}
                raise ClientError(error, name)
            out = attr(*args, **kwargs)
            self.writes.append(name)
            self.params.append(kwargs)
            self._check(name)
            if self.crash_after == len(self.writes):
                raise Crash(name)
            return out

        return write


@dataclass
class World:
    """The moto account, the database, and the evidence the re-check will read."""

    settings: Settings
    db: Database
    iam: Any
    used: dict[str, set[str]] = field(default_factory=dict)
    floors: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    client: CrashingIam | None = None
    now: datetime = NOW
    violations: list[str] = field(default_factory=list)
    # One boto3 session for every read: each new session parses botocore's service models
    # again, a tenth of a second a time.
    base: boto3.Session | None = None

    # -- building ------------------------------------------------------------------------------

    def role(self, name: str, used: set[str] | None = None, in_use: bool = True) -> None:
        self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
        if in_use:
            # RoleLastUsed inside the window: the role is in use, so its grants are judged.
            backend = iam_backends[ACCOUNT]["global"]
            backend.get_role(name).last_used = AS_OF - timedelta(days=5)
        self.used[f"arn:aws:iam::{ACCOUNT}:role/{name}"] = {a.lower() for a in used or set()}

    def reader(self, spec: AccountSpec, as_of: datetime, window_days: int) -> AccountRead:
        principals = read_account(open_account(spec, base=self.base)).principals
        evidence = {}
        for p in principals:
            actions = {a: as_of - timedelta(days=3) for a in self.used.get(p.arn, set())}
            services = {a.partition(":")[0]: t for a, t in actions.items()}
            evidence[p.arn] = [
                UsageEvidence(
                    source="cloudtrail",
                    covered_from=as_of - timedelta(days=window_days + 1),
                    covered_to=as_of,
                    read_at=as_of,
                    services=services,
                    actions=actions,
                    data_events=True,
                )
            ]
        return AccountRead(principals, evidence)

    def scan(self) -> None:
        report = run_scan(self.settings, as_of=AS_OF, reader=self.reader)
        assert report.ok, report.summary()

    def approve(self, principal: str, kind: str, service: str | None = None) -> int:
        """Approve the open finding of this kind (and service) of a principal, as shown."""
        with self.db.session() as session:
            query = (
                select(Finding)
                .join(Finding.principal)
                .where(
                    Principal.name == principal,
                    Finding.kind == kind,
                    Finding.status == "unused",
                    Finding.closed_at.is_(None),
                )
            )
            if service:
                query = query.where(Finding.service == service)
            finding = session.scalars(query).one()
            decision = Decision(
                finding_id=finding.id,
                round=finding.round,
                kind="approve",
                decided_by=CHAMPION,
                frozen=shown_for(finding),
            )
            session.add(decision)
            session.flush()
            return decision.id

    # -- observing -----------------------------------------------------------------------------

    def grants(self, kind: str, name: str) -> set[str]:
        """Return what a principal is allowed now, read from the account (every policy)."""
        cat = catalogue()
        state = IamWriter(self.iam, ACCOUNT).read_state(kind, name)
        docs = list(state["inline"].values())
        docs += [
            next(v["doc"] for v in m["versions"] if v["default"]) for m in state["managed"].values()
        ]
        for group in state.get("groups", {}).values():
            docs += list(group["inline"].values()) + list(group["managed"].values())
        out: set[str] = set()
        for doc in docs:
            out |= P.grants(doc, cat)
        return out

    def keep_at_least(self, kind: str, name: str, floor: set[str]) -> None:
        """Check after every write that the principal holds at least floor."""
        self.floors[(kind, name)] = floor

    def check(self, call: str) -> None:
        for (kind, name), floor in self.floors.items():
            missing = floor - self.grants(kind, name)
            if missing:
                self.violations.append(f"after {call}: {name} lost {sorted(missing)[:5]}")

    def clients(self, crash_after: int | None = None) -> Callable[[AccountSpec], Any]:
        self.client = CrashingIam(self.iam, self.check, crash_after)
        return lambda spec: self.client

    def apply(self, crash_after: int | None = None, **kwargs: Any) -> Any:
        from bot.removal import apply_approved

        kwargs.setdefault("commit", True)
        kwargs.setdefault("as_of", AS_OF)
        kwargs.setdefault("now", self.now)
        return apply_approved(
            self.settings,
            self.db,
            reader=self.reader,
            iam_clients=self.clients(crash_after),
            **kwargs,
        )


@functools.cache
def _used_managed_policies() -> str:
    """Return moto's AWS managed policy data cut to the policies these tests attach."""
    every = json.loads(moto_iam.aws_managed_policies_data)
    return json.dumps({name: every[name] for name in USED_AWS_MANAGED})


@pytest.fixture
def world(
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    fake_credentials: None,  # noqa: F811
) -> Iterator[World]:
    # Listing moto's 1,300 AWS managed policies takes a second a read; without them in the
    # listing, the inventory fetches the attached ones one by one (its own fallback).
    filtered = [f for f in inventory.LISTING_FILTER if f != "AWSManagedPolicy"]
    monkeypatch.setattr(inventory, "LISTING_FILTER", filtered)
    monkeypatch.setattr(moto_iam, "aws_managed_policies_data", _used_managed_policies())
    teams = tmp_path / "teams.yaml"
    teams.write_text(TEAMS_YAML, encoding="utf-8")
    settings = Settings(DATABASE_URL=db.url, PARE_TEAMS_FILE=teams, PARE_WINDOW_DAYS=90)
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        base = boto3.Session()
        yield World(settings, db, base.client("iam", region_name="us-east-1"), base=base)
