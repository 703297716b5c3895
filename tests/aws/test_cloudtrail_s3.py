"""CloudTrail log files read from the account's S3 bucket, as CloudTrail delivers them."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
from moto import mock_aws

from bot.aws.cloudtrail_s3 import list_log_keys, read_trail
from bot.aws.session import AccountSession
from bot.teams import Account

ACCOUNT = "200000000011"
DAY = "AWSLogs/{account}/CloudTrail/us-east-1/2023/07/10/"


def _account(bucket: str = "trail-bucket") -> Account:
    return Account(id=ACCOUNT, cloudtrail={"bucket": bucket, "prefix": "org/"})


def _upload(s3, realdata: Path) -> int:  # type: ignore[no-untyped-def]
    files = sorted((realdata / "cloudtrail/invictus-ir_aws_dataset").iterdir())
    for i, path in enumerate(files):
        body = path.read_bytes()
        # Half gzipped as CloudTrail delivers them, half plain as a copy might be.
        name, data = (path.name + ".gz", gzip.compress(body)) if i % 2 else (path.name, body)
        s3.put_object(
            Bucket="trail-bucket", Key="org/" + DAY.format(account=ACCOUNT) + name, Body=data
        )
    other = (
        "org/" + DAY.format(account="999999999999") + files[0].name.replace(ACCOUNT, "999999999999")
    )
    s3.put_object(Bucket="trail-bucket", Key=other, Body=files[0].read_bytes())
    digest = "org/AWSLogs/200000000011/CloudTrail-Digest/us-east-1/2023/07/10/x.json.gz"
    s3.put_object(Bucket="trail-bucket", Key=digest, Body=b"{}")
    broken = (
        "org/"
        + DAY.format(account=ACCOUNT)
        + f"{ACCOUNT}_CloudTrail_us-east-1_20230710T1240Z_bad.json.gz"
    )
    s3.put_object(Bucket="trail-bucket", Key=broken, Body=b"\x1f\x8btruncated")
    return len(files)


def test_the_accounts_log_files_are_read_gzipped_or_not(realdata: Path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="trail-bucket")
        count = _upload(s3, realdata)
        session = AccountSession(_account(), boto3.Session(region_name="us-east-1"))
        readout = read_trail(
            session,
            since=datetime(2023, 7, 1, tzinfo=UTC),
            until=datetime(2023, 7, 11, tzinfo=UTC),
        )

    assert readout.files_read == count == 55
    assert readout.records == 2900
    assert len(readout.broken_files) == 1 and readout.broken_files[0].endswith("_bad.json.gz")
    arn = f"arn:aws:iam::{ACCOUNT}:user/person-a"
    assert readout.evidence_for([arn])[arn][0].problems


def test_files_outside_the_window_are_not_read_and_every_page_is_followed(
    realdata: Path,
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="trail-bucket")
        _upload(s3, realdata)
        keys = list(
            list_log_keys(
                s3,
                "trail-bucket",
                "org/",
                ACCOUNT,
                datetime(2023, 7, 10, 13, 40, tzinfo=UTC),
                datetime(2023, 7, 10, 13, 40, tzinfo=UTC),
                page_size=7,
            )
        )
        session = AccountSession(_account("no-such-bucket"), boto3.Session(region_name="us-east-1"))
        missing = read_trail(
            session, since=datetime(2023, 7, 1, tzinfo=UTC), until=datetime(2023, 7, 11, tzinfo=UTC)
        )

    # One hour of slack before 13:40 keeps only the 12:40 files, and no other account's.
    assert len(keys) == 2
    assert all(ACCOUNT + "/CloudTrail/" in k for k in keys)
    assert missing.files_read == 0 and "NoSuchBucket" in missing.problems[0]


def _record(at: datetime) -> dict:
    return {
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "sts.amazonaws.com",
        "eventName": "GetCallerIdentity",
        "eventType": "AwsApiCall",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/other"},
    }


def test_a_day_missing_from_the_bucket_ends_what_the_logs_cover(monkeypatch) -> None:
    monkeypatch.setattr("bot.evidence.cloudtrail.MAX_FILE_BYTES", 10_000)
    # Files for 1 to 5 September and 8 to 10 September: the 6th and 7th were never delivered.
    days = [datetime(2026, 9, d, 12, tzinfo=UTC) for d in (1, 2, 3, 4, 5, 8, 9, 10)]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="trail-bucket")
        for at in days:
            key = (
                "org/"
                + DAY.format(account=ACCOUNT).replace("2023/07/10", f"{at:%Y/%m/%d}")
                + f"{ACCOUNT}_CloudTrail_us-east-1_{at:%Y%m%dT%H%MZ}_x.json"
            )
            s3.put_object(
                Bucket="trail-bucket", Key=key, Body=json.dumps({"Records": [_record(at)]})
            )
        big = (
            f"org/{DAY.format(account=ACCOUNT)}{ACCOUNT}_CloudTrail_us-east-1_20260910T1300Z_b.json"
        )
        s3.put_object(
            Bucket="trail-bucket", Key=big.replace("2023/07/10", "2026/09/10"), Body=b" " * 20_000
        )
        session = AccountSession(_account(), boto3.Session(region_name="us-east-1"))
        readout = read_trail(
            session,
            since=datetime(2026, 8, 31, tzinfo=UTC),
            until=datetime(2026, 9, 11, tzinfo=UTC),
        )

    arn = f"arn:aws:iam::{ACCOUNT}:role/quiet"
    (evidence,) = readout.evidence_for([arn])[arn]
    assert evidence.covered_from == datetime(2026, 9, 8, 12, tzinfo=UTC)
    assert evidence.coverage_note == "no CloudTrail records from 2026-09-06 to 2026-09-07"
    assert len(readout.broken_files) == 1 and "larger than 10,000 bytes" in evidence.problems[0]


def _listed_prefixes(s3) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    s3.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: seen.append(params.get("Prefix", "")),
    )
    return seen


def test_only_the_windows_day_folders_are_listed_for_plain_and_organisation_trails() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    until = datetime(2026, 11, 3, tzinfo=UTC)
    name = f"{ACCOUNT}_CloudTrail_eu-west-1_20261102T1000Z_x.json.gz"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="trail-bucket")
        inside = f"org/AWSLogs/o-abc123/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/02/{name}"
        years_old = f"org/AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2019/01/01/{name}"
        for key in (inside, years_old):
            s3.put_object(Bucket="trail-bucket", Key=key, Body=b"{}")
        listed = _listed_prefixes(s3)

        keys = list(list_log_keys(s3, "trail-bucket", "org/", ACCOUNT, since, until))

    assert keys == [inside]
    day_folders = [p for p in listed if p.count("/") > 6]
    # Both layouts' day folders for the window (and the day before), never the whole trail.
    assert any("/o-abc123/" in p and p.endswith("2026/11/02/") for p in day_folders)
    assert not any("2019/" in p for p in listed)
    assert "org/" not in listed


def test_a_bucket_not_laid_out_by_cloudtrail_is_listed_whole() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    until = datetime(2026, 11, 3, tzinfo=UTC)
    copied = f"copies/{ACCOUNT}_CloudTrail_eu-west-1_20261102T1000Z_x.json"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="trail-bucket")
        s3.put_object(Bucket="trail-bucket", Key=copied, Body=b"{}")

        keys = list(list_log_keys(s3, "trail-bucket", "copies/", ACCOUNT, since, until))

    assert keys == [copied]
