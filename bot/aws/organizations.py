"""The accounts to scan, found through AWS Organizations with OU and tag filters."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.session import CLIENT_CONFIG, error_code, open_account
from bot.errors import AwsReadError
from bot.teams import Account, Organization

log = logging.getLogger(__name__)


class _Lister:
    def __init__(self, client: Any):
        self.client = client
        self.calls: Counter[str] = Counter()

    def pages(self, name: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator(name).paginate(**params):
            self.calls[f"organizations:{name}"] += 1
            yield from page.get(key) or []

    def under(self, parent: str) -> Iterator[dict[str, Any]]:
        """Yield the accounts under an OU or root, at any depth."""
        yield from self.pages("list_accounts_for_parent", "Accounts", ParentId=parent)
        for unit in self.pages(
            "list_organizational_units_for_parent", "OrganizationalUnits", ParentId=parent
        ):
            yield from self.under(unit["Id"])

    def tags(self, account_id: str) -> dict[str, str]:
        items = self.pages("list_tags_for_resource", "Tags", ResourceId=account_id)
        return {t["Key"]: t.get("Value", "") for t in items}


def _client(org: Organization) -> Any:
    if not org.management_role_arn:
        return boto3.client("organizations", region_name=org.region, config=CLIENT_CONFIG)
    spec = Account(
        id=org.management_role_arn.split(":")[4],
        role_arn=org.management_role_arn,
        external_id=org.external_id,
        region=org.region,
        sources=("last_used",),
    )
    return open_account(spec).client("organizations")


def discover_accounts(org: Organization, client: Any | None = None) -> list[Account]:
    """Return the organisation's active accounts that pass its OU, tag and exclude filters."""
    lister = _Lister(client or _client(org))
    try:
        if org.ous:
            found = [a for ou in org.ous for a in lister.under(ou)]
        else:
            found = list(lister.pages("list_accounts", "Accounts"))
        accounts: dict[str, Account] = {}
        for item in found:
            account_id = item["Id"]
            # Suspended and closing accounts cannot be read; Status is the older field name.
            state = item.get("State") or item.get("Status")
            if state != "ACTIVE" or account_id in org.exclude or account_id in accounts:
                continue
            if org.tags:
                tags = lister.tags(account_id)
                if any(tags.get(k) != v for k, v in org.tags.items()):
                    continue
            accounts[account_id] = org.account(account_id, item.get("Name", ""))
    except (ClientError, BotoCoreError) as exc:
        code = error_code(exc)
        log.warning("organisation not listable: code=%s", code)
        raise AwsReadError("organization", "organizations:ListAccounts", code) from None
    log.info(
        "organisation accounts: found=%d kept=%d calls=%d",
        len(found),
        len(accounts),
        sum(lister.calls.values()),
    )
    return sorted(accounts.values(), key=lambda a: a.id)
