"""Assuming the configured role in each account."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from bot.aws.session import CLIENT_CONFIG, open_account
from bot.errors import AwsReadError
from bot.teams import Account


def test_the_assumed_session_acts_in_the_configured_account() -> None:
    account = Account(
        id="111111111111",
        role_arn="arn:aws:iam::111111111111:role/pare-reader",
        sources=("last_used",),
    )
    with mock_aws():
        session = open_account(account)
        identity = session.client("sts").get_caller_identity()

    assert identity["Account"] == "111111111111"
    assert "assumed-role/pare-reader/pare-scan" in identity["Arn"]
    assert session.client("iam").meta.config.retries["mode"] == "adaptive"


def test_the_external_id_is_sent_and_a_refusal_names_the_account() -> None:
    account = Account(
        id="222222222222",
        role_arn="arn:aws:iam::222222222222:role/pare-reader",
        external_id="pare-ext-1",
        sources=("last_used",),
    )
    sts = boto3.client("sts", region_name="us-east-1", config=CLIENT_CONFIG)
    with Stubber(sts) as stub:
        stub.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            http_status_code=403,
            expected_params={
                "RoleArn": account.role_arn,
                "RoleSessionName": "pare-scan",
                "DurationSeconds": 3600,
                "ExternalId": "pare-ext-1",
            },
        )
        with pytest.raises(AwsReadError) as caught:
            open_account(account, sts=sts)

    assert "222222222222" in str(caught.value)
    assert caught.value.code == "AccessDenied"
