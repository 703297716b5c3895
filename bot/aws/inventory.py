"""Read one account's IAM: every role and user with all their policies, keys and passwords.

The listing itself (get_account_authorization_details, every page) must be whole, or the
account fails: a partial listing would make present principals look gone. After it, a problem
reading one user's keys or password is kept on that principal (`read_problems`), so only that
principal fails closed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.export import build_principals, parse_time, user_last_used
from bot.aws.session import AccountSession, error_code
from bot.domain import AccessKey, LoginProfile, PrincipalRecord
from bot.errors import AwsReadError

log = logging.getLogger(__name__)

LISTING_FILTER = ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"]
# IAM's largest page; fewer pages means fewer calls against the shared IAM quota.
PAGE_SIZE = 1000


@dataclass
class AccountInventory:
    """What was read from one account."""

    account_id: str
    principals: list[PrincipalRecord]
    problems: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)


class _Reader:
    def __init__(self, session: AccountSession):
        self.account_id = session.account.id
        self.iam = session.client("iam")
        self.calls: Counter[str] = Counter()
        self.problems: list[str] = []

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

    def _keys(self, record: PrincipalRecord) -> None:
        paginator = self.iam.get_paginator("list_access_keys")
        keys: list[AccessKey] = []
        for page in paginator.paginate(UserName=record.name):
            self.calls["iam:ListAccessKeys"] += 1
            for meta in page.get("AccessKeyMetadata") or []:
                used = self.iam.get_access_key_last_used(AccessKeyId=meta["AccessKeyId"])
                self.calls["iam:GetAccessKeyLastUsed"] += 1
                last = used.get("AccessKeyLastUsed") or {}
                service = last.get("ServiceName")
                keys.append(
                    AccessKey(
                        key_id=meta["AccessKeyId"],
                        status=meta.get("Status", "Active"),
                        created_at=parse_time(meta.get("CreateDate")),
                        last_used_at=parse_time(last.get("LastUsedDate")),
                        last_used_service=None if service in (None, "N/A") else service,
                    )
                )
        record.access_keys = keys

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

    def credentials(self, record: PrincipalRecord) -> None:
        for what, step in (("access keys", self._keys), ("login profile", self._login_profile)):
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


def read_account(session: AccountSession) -> AccountInventory:
    """Read every role and user of the account; raise AwsReadError if the listing fails."""
    reader = _Reader(session)
    details = reader.listing()
    reader.fill_missing_policies(details)
    principals = build_principals(details)
    for record in principals:
        if record.kind == "user":
            reader.credentials(record)
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
    )
