"""Sessions into configured accounts: the default credential chain, then the account's role."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bot.errors import AwsReadError
from bot.teams import Account

log = logging.getLogger(__name__)

# Adaptive mode rate-limits the client itself once AWS starts throttling, which keeps a scan of
# thousands of principals under IAM's request quota instead of failing it.
CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})
# What AWS answers when a caller goes over a quota; botocore retries these already, and a
# call that still fails after its retries is worth a longer, jittered wait before giving up.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
SESSION_NAME = "pare-scan"
SESSION_SECONDS = 3600


def error_code(exc: Exception) -> str:
    """Return the AWS error code of a botocore exception, or its class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


T = TypeVar("T")
Sleep = Callable[[float], None]


def is_throttling(exc: Exception) -> bool:
    """Return whether an AWS error says the caller is going too fast."""
    return error_code(exc) in THROTTLING_CODES


def backoff_delays(
    first: float = 1.0, factor: float = 2.0, cap: float = 20.0, total: float = 300.0
) -> Iterator[float]:
    """Yield growing waits (capped) until their sum would pass `total` seconds."""
    spent, delay = 0.0, first
    while spent + delay <= total:
        yield delay
        spent += delay
        delay = min(delay * factor, cap)


def with_backoff(
    call: Callable[..., T],
    *args: Any,
    sleep: Sleep = time.sleep,
    attempts: int = 4,
    **kwargs: Any,
) -> T:
    """Call an AWS API, waiting with jittered exponential backoff while it throttles.

    Adaptive retries inside botocore come first; this outer loop is for a quota that stays
    exhausted for longer than those retries wait (IAM's is shared by the whole account).
    """
    delays = backoff_delays(first=2.0, cap=30.0)
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except ClientError as exc:
            if not is_throttling(exc) or attempt == attempts - 1:
                raise
            wait = next(delays, 30.0)
            # Full jitter keeps parallel account scans from retrying in lockstep.
            sleep(wait / 2 + random.uniform(0, wait / 2))
    raise AssertionError("unreachable")


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
