"""Accounts from AWS Organizations on moto: OU filters at any depth, tags, exclusions."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from bot.aws.organizations import discover_accounts
from bot.errors import AwsReadError
from bot.teams import Organization


def _account(org, name: str, parent: str, root: str, tags: dict[str, str] | None = None) -> str:
    status = org.create_account(
        AccountName=name,
        Email=f"{name}@example.com",
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    )["CreateAccountStatus"]
    account_id = status["AccountId"]
    org.move_account(AccountId=account_id, SourceParentId=root, DestinationParentId=parent)
    return account_id


def test_ou_and_tag_filters_choose_the_accounts_to_scan() -> None:
    with mock_aws():
        org = boto3.client("organizations", region_name="us-east-1")
        org.create_organization(FeatureSet="ALL")
        root = org.list_roots()["Roots"][0]["Id"]
        prod = org.create_organizational_unit(ParentId=root, Name="prod")["OrganizationalUnit"]
        team = org.create_organizational_unit(ParentId=prod["Id"], Name="payments")[
            "OrganizationalUnit"
        ]
        direct = _account(org, "prod-shared", prod["Id"], root, {"pare": "scan"})
        nested = _account(org, "payments-prod", team["Id"], root, {"pare": "scan"})
        untagged = _account(org, "prod-sandbox", prod["Id"], root)
        excluded = _account(org, "prod-legacy", prod["Id"], root, {"pare": "scan"})
        outside = _account(org, "dev", root, root, {"pare": "scan"})

        spec = Organization(
            role_name="pare-reader",
            ous=(prod["Id"],),
            tags={"pare": "scan"},
            exclude=(excluded,),
            sources=("last_used",),
        )
        found = discover_accounts(spec, client=org)
        everything = discover_accounts(Organization(role_name="pare-reader"), client=org)

    assert {a.id for a in found} == {direct, nested}
    assert {a.name for a in found} == {"prod-shared", "payments-prod"}
    assert all(a.role_arn == f"arn:aws:iam::{a.id}:role/pare-reader" for a in found)
    assert all(a.sources == ("last_used",) for a in found)
    assert {direct, nested, untagged, excluded, outside} <= {a.id for a in everything}


def test_an_organisation_that_cannot_be_listed_is_a_read_error() -> None:
    org = boto3.client("organizations", region_name="us-east-1")
    with Stubber(org) as stub:
        stub.add_client_error("list_accounts", service_error_code="AccessDeniedException")
        with pytest.raises(AwsReadError, match="AccessDeniedException"):
            discover_accounts(Organization(role_name="pare-reader"), client=org)
