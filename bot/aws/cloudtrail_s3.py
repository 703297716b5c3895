"""Read an account's CloudTrail log files from its configured S3 bucket and prefix."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.session import AccountSession, error_code
from bot.evidence import cloudtrail
from bot.evidence.cloudtrail import TrailReadout

log = logging.getLogger(__name__)

# CloudTrail names each file <account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<random>.json.gz
# and stores it under AWSLogs/[<org id>/]<account>/CloudTrail/<region>/<YYYY>/<MM>/<DD>/.
FILE_NAME = re.compile(r"(?P<account>\d{12})_CloudTrail_[a-z0-9-]+_(?P<time>\d{8}T\d{4}Z)_")
ACCOUNT_IN_PATH = re.compile(r"/(?P<account>\d{12})/CloudTrail/")
# A file is delivered within about 15 minutes of its last record; allow slack either side.
DELIVERY_SLACK = timedelta(hours=1)


def _file_time(key: str) -> datetime | None:
    match = FILE_NAME.search(key)
    if not match:
        return None
    return datetime.strptime(match["time"], "%Y%m%dT%H%MZ").replace(tzinfo=UTC)


def wanted(key: str, account_id: str, since: datetime, until: datetime) -> bool:
    """Say whether an object is one of this account's log files within the time asked."""
    if "CloudTrail-Digest" in key or key.endswith("/"):
        # Digest files prove log integrity; they hold no records.
        return False
    if not (key.endswith(".json.gz") or key.endswith(".json")):
        return False
    in_path = ACCOUNT_IN_PATH.search("/" + key)
    if in_path and in_path["account"] != account_id:
        # An organisation trail keeps every member account's logs under one prefix.
        return False
    moment = _file_time(key)
    return moment is None or since - DELIVERY_SLACK <= moment <= until + DELIVERY_SLACK


def _folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Return the sub-folders directly under prefix (every page)."""
    paginator = s3.get_paginator("list_objects_v2")
    found = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        found += [p["Prefix"] for p in page.get("CommonPrefixes") or []]
    return found


def day_prefixes(
    s3: Any, bucket: str, prefix: str, account_id: str, since: datetime, until: datetime
) -> list[str]:
    """Return the per-day folders that can hold the account's logs for [since, until].

    CloudTrail files lie under AWSLogs/[<org id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/;
    listing only those days keeps a scan's cost to the window, however long the trail has
    been delivering. An empty list means the bucket is not laid out that way.
    """
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    logs = base if base.endswith("AWSLogs/") else base + "AWSLogs/"
    roots = [f"{logs}{account_id}/CloudTrail/"]
    # An organisation trail adds the organisation's id as a folder above the accounts.
    roots += [f"{f}{account_id}/CloudTrail/" for f in _folders(s3, bucket, logs) if "/o-" in f]
    first = (since - DELIVERY_SLACK).date()
    days = [first + timedelta(days=n) for n in range((until.date() - first).days + 2)]
    out = []
    for root in roots:
        for region in _folders(s3, bucket, root):
            out += [f"{region}{day:%Y/%m/%d}/" for day in days]
    return out


def list_log_keys(
    s3: Any,
    bucket: str,
    prefix: str,
    account_id: str,
    since: datetime,
    until: datetime,
    page_size: int = 1000,
) -> Iterator[str]:
    """Yield the keys of the account's log files for the window, following every page."""
    folders = day_prefixes(s3, bucket, prefix, account_id, since, until)
    if not folders:
        # Not CloudTrail's own layout (a copy, a custom prefix): list everything under it.
        folders = [prefix]
    paginator = s3.get_paginator("list_objects_v2")
    for folder in folders:
        pages = paginator.paginate(
            Bucket=bucket, Prefix=folder, PaginationConfig={"PageSize": page_size}
        )
        for page in pages:
            for item in page.get("Contents") or []:
                if wanted(item["Key"], account_id, since, until):
                    yield item["Key"]


def read_trail(session: AccountSession, *, since: datetime, until: datetime) -> TrailReadout:
    """Read the account's CloudTrail logs for [since, until] into a TrailReadout.

    A bucket that cannot be listed is a problem on the readout, not an exception: the scan
    goes on and the analysis sees evidence it cannot trust.
    """
    account = session.account
    trail = account.cloudtrail
    readout = TrailReadout(data_events=bool(trail and trail.data_events))
    if trail is None:
        readout.problems.append("no CloudTrail bucket configured")
        return readout
    s3 = session.client("s3", region=trail.region)
    try:
        keys = list(list_log_keys(s3, trail.bucket, trail.prefix, account.id, since, until))
    except (ClientError, BotoCoreError) as exc:
        code = error_code(exc)
        readout.problems.append(f"CloudTrail bucket {trail.bucket} not listable: {code}")
        log.warning("trail listing failed: account=%s code=%s", account.id, code)
        return readout
    for key in keys:
        try:
            # Read no more than a log file may hold, so an outsized object cannot exhaust memory;
            # one byte more is enough for the parser to call it broken.
            body = s3.get_object(Bucket=trail.bucket, Key=key)["Body"].read(
                cloudtrail.MAX_FILE_BYTES + 1
            )
        except (ClientError, BotoCoreError) as exc:
            readout.broken_files.append(key)
            readout.problems.append(f"CloudTrail log file {key} not readable: {error_code(exc)}")
            continue
        readout.add_file(key, body)
    log.info("read trail: account=%s %s", account.id, readout.summary())
    return readout
