"""Sessions into configured accounts: the default credential chain, then the account's role."""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bot.errors import AwsReadError
from bot.teams import Account

log = logging.getLogger(__name__)

# Adaptive mode rate-limits the client itself once AWS starts throttling, which keeps a scan of
# thousands of principals under IAM's request quota instead of failing it.
CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})
SESSION_NAME = "pare-scan"
SESSION_SECONDS = 3600


def error_code(exc: Exception) -> str:
    """Return the AWS error code of a botocore exception, or its class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


class AccountSession:
    """A boto3 session acting in one account, whose clients all retry adaptively."""

    def __init__(self, account: Account, session: boto3.Session):
        self.account = account
        self.session = session

    def client(self, service: str, region: str | None = None) -> Any:
        """Return a client for service in the account's region (or the one given)."""
        return self.session.client(
            service, region_name=region or self.account.region, config=CLIENT_CONFIG
        )


def open_account(
    account: Account, base: boto3.Session | None = None, sts: Any | None = None
) -> AccountSession:
    """Assume the account's role (with its external id); raise AwsReadError if refused."""
    base = base or boto3.Session()
    if not account.role_arn:
        # No role configured: the default credentials are already in the account.
        return AccountSession(account, base)
    sts = sts or base.client("sts", region_name=account.region, config=CLIENT_CONFIG)
    params: dict[str, Any] = {
        "RoleArn": account.role_arn,
        "RoleSessionName": SESSION_NAME,
        "DurationSeconds": SESSION_SECONDS,
    }
    if account.external_id:
        params["ExternalId"] = account.external_id
    try:
        creds = sts.assume_role(**params)["Credentials"]
    except (ClientError, BotoCoreError) as exc:
        log.warning("assume role failed: account=%s code=%s", account.id, error_code(exc))
        raise AwsReadError(account.id, "sts:AssumeRole", error_code(exc)) from None
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=account.region,
    )
    log.info("assumed role: account=%s", account.id)
    return AccountSession(account, session)
