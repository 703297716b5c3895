"""Evidence benchmarks: `python -m benchmarks.evidence [--quick] [--trailscraper PATH]`.

Prints three tables as Markdown:
1. analysis time and peak memory (tracemalloc) for 1,000, 10,000 and 50,000 principals in the
   export format, each holding real AWS managed policies (the copies moto ships);
2. CloudTrail records per second for Pare's parser and, when its command is given, for
   trailscraper on the same log folder in the same run;
3. AWS API calls per principal, counted with a botocore event hook (moto for IAM, S3 and
   Organizations; Stubber for Access Analyzer and Access Advisor, which moto lacks), beside
   the fewest calls the APIs allow.
Nothing here talks to AWS: moto and Stubber answer every call, with fake credentials.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("PARE_REALDATA", REPO.parent / "shared" / "realdata"))
INVICTUS = REALDATA / "cloudtrail" / "invictus-ir_aws_dataset"
ACCOUNT = "111122223333"
AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
SIZES = (1_000, 10_000, 50_000)


# -- 1. analysis at scale -------------------------------------------------------------------


def managed_policies() -> list[dict[str, Any]]:
    """Return moto's copies of the AWS managed policies in the export's `Policies` shape."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    out = []
    for name, data in sorted(json.loads(aws_managed_policies_data).items()):
        arn = f"arn:aws:iam::aws:policy{data.get('Path', '/')}{name}"
        version = {
            "VersionId": data["DefaultVersionId"],
            "IsDefaultVersion": True,
            "CreateDate": data["UpdateDate"],
            "Document": data["Document"],
        }
        out.append(
            {
                "PolicyName": name,
                "Arn": arn,
                "DefaultVersionId": data["DefaultVersionId"],
                "PolicyVersionList": [version],
            }
        )
    return out


def export(count: int, policies: list[dict[str, Any]], seed: int = 7) -> dict[str, Any]:
    """Return a `get-account-authorization-details` document with `count` roles."""
    rng = random.Random(seed)
    roles = []
    created = (AS_OF - timedelta(days=500)).isoformat()
    for i in range(count):
        attached = rng.sample(policies, rng.choice((1, 2, 2, 3)))
        last = AS_OF - timedelta(days=rng.choice((1, 3, 10, 200)))
        roles.append(
            {
                "RoleName": f"svc-{i:05d}",
                "RoleId": f"AROA{i:016d}",
                "Arn": f"arn:aws:iam::{ACCOUNT}:role/svc-{i:05d}",
                "Path": "/",
                "CreateDate": created,
                "RolePolicyList": [],
                "AttachedManagedPolicies": [
                    {"PolicyName": p["PolicyName"], "PolicyArn": p["Arn"]} for p in attached
                ],
                "RoleLastUsed": {"LastUsedDate": last.isoformat(), "Region": "us-east-1"},
                "Tags": [],
            }
        )
    return {
        "RoleDetailList": roles,
        "UserDetailList": [],
        "GroupDetailList": [],
        "Policies": policies,
    }


def trail_evidence(principals: list[Any], seed: int = 11) -> dict[str, list[Any]]:
    """Return CloudTrail-like evidence: each principal used a few of its granted actions."""
    from bot.analysis import granted_actions
    from bot.catalog import catalogue
    from bot.domain import UsageEvidence

    rng = random.Random(seed)
    cat = catalogue()
    out = {}
    for p in principals:
        actions = sorted(granted_actions(p.policies[:1], cat))
        used = rng.sample(actions, min(len(actions), 5)) if actions else []
        seen = AS_OF - timedelta(days=2)
        out[p.arn] = [
            UsageEvidence(
                source="cloudtrail",
                covered_from=AS_OF - timedelta(days=120),
                covered_to=AS_OF,
                read_at=AS_OF,
                services={a.partition(":")[0].lower(): seen for a in used},
                actions={a.lower(): seen for a in used},
            )
        ]
    return out


def analysis_row(count: int, policies: list[dict[str, Any]]) -> dict[str, Any]:
    """Return time and peak memory of parsing and judging `count` principals."""
    from bot.analysis import analyze
    from bot.aws.export import build_principals
    from bot.teams import Exclusions

    document = export(count, policies)
    gc.collect()
    started = time.perf_counter()
    principals = build_principals(document)
    parsed = time.perf_counter()
    evidence = trail_evidence(principals)
    ready = time.perf_counter()
    results = analyze(principals, evidence, as_of=AS_OF, window_days=90, exclusions=Exclusions())
    judged = time.perf_counter()
    findings = sum(len(r.findings) for r in results)
    grants = sum(len(v) for r in results for v in r.granted.values())
    del results, principals, evidence
    gc.collect()

    # Peak memory is measured in a second, traced run: tracing slows Python down several times.
    tracemalloc.start()
    principals = build_principals(document)
    evidence = trail_evidence(principals)
    results = analyze(principals, evidence, as_of=AS_OF, window_days=90, exclusions=Exclusions())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del results, principals, evidence
    return {
        "principals": count,
        "grants": grants,
        "findings": findings,
        "parse_s": parsed - started,
        "evidence_s": ready - parsed,
        "analyse_s": judged - ready,
        "peak_mb": peak / 2**20,
    }


def analysis_table(sizes: tuple[int, ...]) -> list[str]:
    """Return the analysis-at-scale table as Markdown lines."""
    from bot.catalog import catalogue

    catalogue()  # Loaded once per process; not part of any size's cost.
    policies = managed_policies()
    rows = [analysis_row(n, policies) for n in sizes]
    base = rows[0]
    lines = [
        f"AWS managed policies in the pool: {len(policies)}; 1 to 3 attached per role.",
        "",
        "| principals | granted actions | findings | parse s | analyse s | µs per grant "
        "| peak MB | time × vs first | size × vs first |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_grant = 1e6 * r["analyse_s"] / max(r["grants"], 1)
        lines.append(
            f"| {r['principals']:,} | {r['grants']:,} | {r['findings']:,} | {r['parse_s']:.2f} "
            f"| {r['analyse_s']:.2f} | {per_grant:.2f} | {r['peak_mb']:.0f} "
            f"| {r['analyse_s'] / base['analyse_s']:.1f} "
            f"| {r['principals'] / base['principals']:.0f} |"
        )
    return lines


# -- 2. CloudTrail parsing -------------------------------------------------------------------


def log_folder(target: Path, copies: int) -> int:
    """Replicate the real log files `copies` times, gzipped as S3 delivers them; return records."""
    day = target / "AWSLogs" / "200000000011" / "CloudTrail" / "us-east-1" / "2023" / "07" / "10"
    day.mkdir(parents=True, exist_ok=True)
    records = 0
    for path in sorted(INVICTUS.glob("*.json")):
        body = path.read_bytes()
        records += len(json.loads(body)["Records"])
        packed = gzip.compress(body, compresslevel=6)
        for n in range(copies):
            # trailscraper reads only names that look like CloudTrail's own.
            stem = path.name.removesuffix(".json")
            (day / f"{stem}c{n:04d}.json.gz").write_bytes(packed)
    return records * copies


PARE_READ = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from bot.evidence.cloudtrail import read_log_folder\n"
    "start = time.perf_counter()\n"
    "out = read_log_folder(Path(sys.argv[1]))\n"
    "print(out.records, time.perf_counter() - start)\n"
)


def _run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def cloudtrail_table(copies: int, trailscraper: str | None) -> list[str]:
    """Return records per second for Pare and trailscraper on one replicated folder."""
    work = Path(tempfile.mkdtemp(prefix="pare-bench-"))
    try:
        folder, empty = work / "logs", work / "empty"
        empty.mkdir()
        records = log_folder(folder, copies)
        files = sum(1 for _ in folder.rglob("*.json.gz"))
        size = sum(p.stat().st_size for p in folder.rglob("*.json.gz"))
        lines = [
            f"Log folder: {files:,} gzipped files, {size / 2**20:.0f} MB, {records:,} records "
            f"(the invictus-ir dataset × {copies}).",
            "",
            "| parser | records | wall s (process) | wall s minus start-up | records/s |",
            "|---|---:|---:|---:|---:|",
        ]
        pare = [sys.executable, "-c", PARE_READ]
        start_up = _run([*pare, str(empty)])
        wall = _run([*pare, str(folder)])
        inner = subprocess.run(
            [*pare, str(folder)], check=True, capture_output=True, text=True
        ).stdout.split()
        seen, parse_s = int(inner[0]), float(inner[1])
        lines.append(
            f"| Pare `read_log_folder` | {seen:,} | {wall:.2f} | {wall - start_up:.2f} "
            f"| {seen / max(wall - start_up, 1e-9):,.0f} |"
        )
        lines.append(
            f"| Pare, in-process parse only | {seen:,} | | {parse_s:.2f} | {seen / parse_s:,.0f} |"
        )
        if trailscraper:
            window = ["--from", "2023-07-09", "--to", "2023-07-12"]
            scraper = [trailscraper, "select", "--log-dir"]
            start_up = _run([*scraper, str(empty), *window])
            wall = _run([*scraper, str(folder), *window])
            out = subprocess.run(
                [*scraper, str(folder), *window], check=True, capture_output=True, text=True
            ).stdout
            got = len(json.loads(out)["Records"])
            lines.append(
                f"| trailscraper 0.10 `select` | {got:,} | {wall:.2f} | {wall - start_up:.2f} "
                f"| {got / max(wall - start_up, 1e-9):,.0f} |"
            )
        return lines
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 3. AWS API calls per principal ----------------------------------------------------------


@contextmanager
def counted_clients(calls: Counter[str]) -> Iterator[None]:
    """Count every API call of clients Pare makes, through a botocore event hook."""
    from bot.aws.session import AccountSession

    original = AccountSession.client

    def client(self: AccountSession, service: str, region: str | None = None) -> Any:
        made = original(self, service, region)
        hook(made, calls)
        return made

    AccountSession.client = client  # type: ignore[method-assign]
    try:
        yield
    finally:
        AccountSession.client = original  # type: ignore[method-assign]


def hook(client: Any, calls: Counter[str]) -> None:
    """Count each call once, before its parameters are built (retries are not new calls)."""
    service = client.meta.service_model.service_name

    def count(model: Any, **_: Any) -> None:
        calls[f"{service}:{model.name}"] += 1

    client.meta.events.register("before-parameter-build.*.*", count)


def _moto_account(roles: int, users: int) -> None:
    import boto3

    iam = boto3.client("iam", region_name="us-east-1")
    doc = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:List*", "Resource": "*"}],
        }
    )
    trust = json.dumps(
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
    shared = iam.create_policy(PolicyName="shared", PolicyDocument=doc)["Policy"]["Arn"]
    for i in range(roles):
        iam.create_role(RoleName=f"r{i}", AssumeRolePolicyDocument=trust)
        iam.attach_role_policy(RoleName=f"r{i}", PolicyArn=shared)
    for i in range(users):
        iam.create_user(UserName=f"u{i}")
        iam.create_access_key(UserName=f"u{i}")
        iam.create_login_profile(UserName=f"u{i}", Password="Bench-Pass-0001!")


def inventory_calls(roles: int, users: int) -> dict[str, Counter[str]]:
    """Count the IAM calls of reading an account, per user and through the report."""
    from moto import mock_aws

    from bot.aws.inventory import read_account
    from bot.aws.session import AccountSession
    from bot.teams import Account

    out: dict[str, Counter[str]] = {}
    with mock_aws():
        _moto_account(roles, users)
        import boto3

        for label, report in (("per-user reads", False), ("credential report", True)):
            calls: Counter[str] = Counter()
            with counted_clients(calls):
                session = AccountSession(
                    Account(id=ACCOUNT, sources=("last_used",)), boto3.Session()
                )
                read_account(session, credential_report=report, sleep=lambda _: None)
            out[label] = calls
    return out


def analyzer_calls(principals: int, with_permission_findings: int) -> Counter[str]:
    """Count Access Analyzer calls on a Stubber that answers like an analyzer would."""
    import boto3
    from botocore.stub import Stubber

    from bot.aws.access_analyzer import read_unused_access
    from bot.aws.session import AccountSession
    from bot.teams import Account

    client = boto3.client("accessanalyzer", region_name="us-east-1")
    calls: Counter[str] = Counter()
    hook(client, calls)
    when = AS_OF
    arn = f"arn:aws:access-analyzer:us-east-1:{ACCOUNT}:analyzer/unused"
    with Stubber(client) as stub:
        stub.add_response(
            "list_analyzers",
            {"analyzers": [{"arn": arn, "name": "unused", "type": "ACCOUNT_UNUSED_ACCESS",
                            "createdAt": when, "status": "ACTIVE"}]},
        )  # fmt: skip
        summaries = [
            {"id": f"f-{i}", "resource": f"arn:aws:iam::{ACCOUNT}:role/r{i}",
             "resourceType": "AWS::IAM::Role", "resourceOwnerAccount": ACCOUNT,
             "status": "ACTIVE", "findingType": "UnusedPermission", "analyzedAt": when,
             "createdAt": when, "updatedAt": when}
            for i in range(with_permission_findings)
        ]  # fmt: skip
        for start in range(0, max(len(summaries), 1), 100):
            page: dict[str, Any] = {"findings": summaries[start : start + 100]}
            if start + 100 < len(summaries):
                page["nextToken"] = f"t{start}"
            stub.add_response("list_findings_v2", page)
        for s in summaries:
            detail = {"unusedPermissionDetails": {"serviceNamespace": "s3"}}
            stub.add_response("get_finding_v2", {**s, "findingDetails": [detail]})
            stub.add_response("generate_finding_recommendation", {})
            stub.add_response(
                "get_finding_recommendation",
                {"startedAt": when, "resourceArn": s["resource"],
                 "recommendationType": "UNUSED_PERMISSION_RECOMMENDATION",
                 "status": "SUCCEEDED", "recommendedSteps": []},
            )  # fmt: skip
        session = AccountSession(Account(id=ACCOUNT, sources=("access_analyzer",)), boto3.Session())
        read_unused_access(session, client=client, sleep=lambda _: None)
    return calls


def advisor_calls(principals: int, polls: int) -> Counter[str]:
    """Count Access Advisor calls when each job is ready after `polls` polls."""
    import boto3
    from botocore.stub import Stubber

    from bot.aws.access_advisor import read_last_accessed
    from bot.aws.session import AccountSession
    from bot.domain import PrincipalRecord
    from bot.teams import Account

    iam = boto3.client("iam", region_name="us-east-1")
    calls: Counter[str] = Counter()
    hook(iam, calls)
    records = [
        PrincipalRecord(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/r{i}", "role", f"r{i}")
        for i in range(principals)
    ]
    page = {
        "JobStatus": "COMPLETED",
        "JobType": "ACTION_LEVEL",
        "JobCreationDate": AS_OF,
        "JobCompletionDate": AS_OF,
        "ServicesLastAccessed": [],
        "IsTruncated": False,
    }
    with Stubber(iam) as stub:
        for start in range(0, principals, 20):
            batch = records[start : start + 20]
            for n in range(len(batch)):
                stub.add_response(
                    "generate_service_last_accessed_details",
                    {"JobId": f"{start + n:08d}-0000-4000-8000-000000000000"},
                )
            for round_ in range(polls):
                status = "COMPLETED" if round_ == polls - 1 else "IN_PROGRESS"
                for _ in batch:
                    stub.add_response(
                        "get_service_last_accessed_details", {**page, "JobStatus": status}
                    )
        session = AccountSession(Account(id=ACCOUNT, sources=("access_advisor",)), boto3.Session())
        read_last_accessed(session, records, iam=iam, sleep=lambda _: None)
    return calls


def calls_table(roles: int, users: int) -> list[str]:
    """Return the calls-per-principal table as Markdown lines."""
    principals = roles + users
    pages = -(-(principals + 1) // 1000)
    lines = [
        f"Account on moto: {roles} roles and {users} users (each user with a key and a password).",
        "",
        "| source | calls | per principal | fewest the APIs allow | per principal |",
        "|---|---:|---:|---:|---:|",
    ]
    inventory = inventory_calls(roles, users)
    for label, calls in inventory.items():
        total = sum(calls.values())
        # Policies need every listing page; key ids need one ListAccessKeys per user with keys;
        # the report's two calls stand in for every other per-user read.
        least = pages + 2 + users
        lines.append(
            f"| IAM inventory, {label} | {total} | {total / principals:.2f} | {least} "
            f"| {least / principals:.2f} |"
        )
    unused = principals // 4
    calls = analyzer_calls(principals, unused)
    total = sum(calls.values())
    least = 1 + -(-unused // 100) + unused + 2 * unused
    lines.append(
        f"| Access Analyzer ({unused} unused-permission findings, recommendations included) "
        f"| {total} | {total / principals:.2f} | {least} | {least / principals:.2f} |"
    )
    for polls in (1, 3):
        calls = advisor_calls(principals, polls)
        total = sum(calls.values())
        least = 2 * principals
        lines.append(
            f"| Access Advisor, ACTION_LEVEL, jobs ready after {polls} poll(s) | {total} "
            f"| {total / principals:.2f} | {least} | {least / principals:.2f} |"
        )
    return lines


def _section(title: str, build: Callable[[], list[str]]) -> None:
    print(f"\n### {title}\n", flush=True)
    for line in build():
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evidence")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--trailscraper", help="the trailscraper command (a throwaway venv)")
    parser.add_argument("--copies", type=int, default=20, help="copies of the real log folder")
    args = parser.parse_args(argv)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        # Fake credentials: moto and Stubber answer everything; nothing may reach AWS.
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)

    sizes = (200, 1_000, 2_000) if args.quick else SIZES
    print(
        f"Pare evidence benchmarks, {datetime.now(UTC):%Y-%m-%d}, Python {sys.version.split()[0]}"
    )
    _section("Analysis at scale", lambda: analysis_table(sizes))
    copies = 2 if args.quick else args.copies
    _section("CloudTrail parsing", lambda: cloudtrail_table(copies, args.trailscraper))
    roles, users = (40, 10) if args.quick else (400, 100)
    _section("AWS API calls per principal", lambda: calls_table(roles, users))
    return 0


if __name__ == "__main__":
    sys.exit(main())
