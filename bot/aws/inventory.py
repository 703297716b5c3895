"""Read one account's IAM: every role and user with all their policies, keys and passwords.

The listing itself (get_account_authorization_details, every page) must be whole, or the
account fails: a partial listing would make present principals look gone. After it, a problem
reading one user's keys or password is kept on that principal (`read_problems`), so only that
principal fails closed.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.export import (
    build_principals,
    parse_time,
    report_keys,
    report_login_profile,
    user_last_used,
)
from bot.aws.session import AccountSession, Sleep, backoff_delays, error_code, with_backoff
from bot.domain import AccessKey, LoginProfile, PrincipalRecord
from bot.errors import AwsReadError

log = logging.getLogger(__name__)

LISTING_FILTER = ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"]
# IAM's largest page; fewer pages means fewer calls against the shared IAM quota.
PAGE_SIZE = 1000
# IAM builds a credential report in seconds for most accounts; past this wait the scan reads
# each user's keys and password one by one instead.
REPORT_WAIT = 60.0


@dataclass
class AccountInventory:
    """What was read from one account."""

    account_id: str
    principals: list[PrincipalRecord]
    problems: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    # When the credential report was generated, if it was the source of keys and passwords.
    report_at: datetime | None = None


def _same_second(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and b is not None and abs((a - b).total_seconds()) < 1


class _Reader:
    def __init__(self, session: AccountSession, sleep: Sleep = time.sleep):
        self.account_id = session.account.id
        self.iam = session.client("iam")
        self.sleep = sleep
        self.calls: Counter[str] = Counter()
        self.problems: list[str] = []
        self.report_at: datetime | None = None

    def credential_report(self) -> dict[str, dict[str, str]] | None:
        """Return the credential report's rows by user ARN, or None if it is not to be had.

        Three calls for the whole account instead of four or more per user; IAM keeps a
        report for four hours, which is fresh enough for a window counted in days.
        """
        delays = backoff_delays(first=1.0, cap=10.0, total=REPORT_WAIT)
        try:
            while True:
                self.calls["iam:GenerateCredentialReport"] += 1
                state = with_backoff(self.iam.generate_credential_report, sleep=self.sleep)
                if state.get("State") == "COMPLETE":
                    break
                delay = next(delays, None)
                if delay is None:
                    log.warning("credential report too slow: account=%s", self.account_id)
                    return None
                self.sleep(delay)
            self.calls["iam:GetCredentialReport"] += 1
            answer = with_backoff(self.iam.get_credential_report, sleep=self.sleep)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "credential report not readable: account=%s code=%s",
                self.account_id,
                error_code(exc),
            )
            return None
        content = answer["Content"]
        text = content.decode("utf-8") if isinstance(content, bytes) else str(content)
        self.report_at = parse_time(answer.get("GeneratedTime"))
        return {row["arn"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("arn")}

    def listing(self) -> dict[str, Any]:
        merged: dict[str, list[Any]] = {
            "UserDetailList": [],
            "GroupDetailList": [],
            "RoleDetailList": [],
            "Policies": [],
        }
        paginator = self.iam.get_paginator("get_account_authorization_details")
        pages = paginator.paginate(Filter=LISTING_FILTER, PaginationConfig={"PageSize": PAGE_SIZE})
        try:
            for page in pages:
                self.calls["iam:GetAccountAuthorizationDetails"] += 1
                for name, items in merged.items():
                    items.extend(page.get(name) or [])
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            log.warning("listing failed: account=%s code=%s", self.account_id, code)
            raise AwsReadError(
                self.account_id, "iam:GetAccountAuthorizationDetails", code
            ) from None
        return merged

    def fill_missing_policies(self, details: dict[str, Any]) -> None:
        """Fetch attached managed policies the listing left out (their default version)."""
        listed = {p["Arn"] for p in details["Policies"]}
        wanted: set[str] = set()
        for kind in ("UserDetailList", "GroupDetailList", "RoleDetailList"):
            for entity in details[kind]:
                wanted.update(r["PolicyArn"] for r in entity.get("AttachedManagedPolicies") or [])
        for arn in sorted(wanted - listed):
            try:
                policy = self.iam.get_policy(PolicyArn=arn)["Policy"]
                self.calls["iam:GetPolicy"] += 1
                version = self.iam.get_policy_version(
                    PolicyArn=arn, VersionId=policy["DefaultVersionId"]
                )["PolicyVersion"]
                self.calls["iam:GetPolicyVersion"] += 1
            except (ClientError, BotoCoreError) as exc:
                # Left out of Policies, the builder marks each holder of it as unreadable.
                self.problems.append(f"managed policy {arn}: {error_code(exc)}")
                continue
            version["IsDefaultVersion"] = True
            details["Policies"].append({**policy, "PolicyVersionList": [version]})

    def _key(self, meta: dict[str, Any]) -> AccessKey:
        used = self.iam.get_access_key_last_used(AccessKeyId=meta["AccessKeyId"])
        self.calls["iam:GetAccessKeyLastUsed"] += 1
        last = used.get("AccessKeyLastUsed") or {}
        service = last.get("ServiceName")
        return AccessKey(
            key_id=meta["AccessKeyId"],
            status=meta.get("Status", "Active"),
            created_at=parse_time(meta.get("CreateDate")),
            last_used_at=parse_time(last.get("LastUsedDate")),
            last_used_service=None if service in (None, "N/A") else service,
        )

    def _key_list(self, record: PrincipalRecord) -> list[dict[str, Any]]:
        paginator = self.iam.get_paginator("list_access_keys")
        metas: list[dict[str, Any]] = []
        for page in paginator.paginate(UserName=record.name):
            self.calls["iam:ListAccessKeys"] += 1
            metas.extend(page.get("AccessKeyMetadata") or [])
        return metas

    def _keys(self, record: PrincipalRecord) -> None:
        record.access_keys = [self._key(meta) for meta in self._key_list(record)]

    def from_report(self, record: PrincipalRecord, row: dict[str, str]) -> None:
        """Fill a user's keys and password from its report row, asking IAM only for key ids."""
        slots = report_keys(row, record.read_problems)
        keys: list[AccessKey] = []
        if slots:
            # The report names keys by slot; their ids come from the key list, matched on the
            # creation time the report calls "last rotated".
            for meta in self._key_list(record):
                created = parse_time(meta.get("CreateDate"))
                slot = next((k for k in slots if _same_second(k.created_at, created)), None)
                if slot is None:
                    # A key newer than the report: ask for its last use directly.
                    keys.append(self._key(meta))
                    continue
                keys.append(
                    replace(slot, key_id=meta["AccessKeyId"], status=meta.get("Status", "Active"))
                )
        record.access_keys = keys
        record.login_profile = report_login_profile(row, record.read_problems)

    def _login_profile(self, record: PrincipalRecord) -> None:
        try:
            profile = self.iam.get_login_profile(UserName=record.name)["LoginProfile"]
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                record.login_profile = None
                return
            raise
        finally:
            self.calls["iam:GetLoginProfile"] += 1
        # PasswordLastUsed is only on the user itself, not in the authorization details.
        user = self.iam.get_user(UserName=record.name)["User"]
        self.calls["iam:GetUser"] += 1
        record.login_profile = LoginProfile(
            created_at=parse_time(profile.get("CreateDate")),
            last_used_at=parse_time(user.get("PasswordLastUsed")),
        )

    def credentials(self, record: PrincipalRecord, row: dict[str, str] | None = None) -> None:
        steps = [("access keys", self._keys), ("login profile", self._login_profile)]
        if row is not None:
            steps = [("credential report", lambda r: self.from_report(r, row))]
        for what, step in steps:
            try:
                step(record)
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                record.read_problems.append(f"{what} not readable: {code}")
                record.last_used_known = False
                log.warning(
                    "read failed: account=%s principal=%s what=%s code=%s",
                    self.account_id,
                    record.arn,
                    what,
                    code,
                )
        record.last_used_at = user_last_used(record)


def read_account(
    session: AccountSession, *, credential_report: bool = False, sleep: Sleep = time.sleep
) -> AccountInventory:
    """Read every role and user of the account; raise AwsReadError if the listing fails.

    With `credential_report`, users' password and key use come from the account's credential
    report; a user the report does not list yet (or a report that cannot be had) is read one
    call at a time instead.
    """
    reader = _Reader(session, sleep)
    details = reader.listing()
    reader.fill_missing_policies(details)
    principals = build_principals(details)
    users = [p for p in principals if p.kind == "user"]
    rows = reader.credential_report() if credential_report and users else None
    for record in users:
        reader.credentials(record, (rows or {}).get(record.arn))
    log.info(
        "read account: account=%s principals=%d calls=%d",
        reader.account_id,
        len(principals),
        sum(reader.calls.values()),
    )
    return AccountInventory(
        account_id=reader.account_id,
        principals=principals,
        problems=reader.problems,
        calls=reader.calls,
        report_at=reader.report_at,
    )
