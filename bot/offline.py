"""`pare analyze`: judge exported IAM data with no AWS access and no database."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from bot.analysis import analyze
from bot.aws.export import load_export, read_json_file
from bot.domain import PrincipalAnalysis, UsageEvidence
from bot.errors import PareError
from bot.evidence.access_advisor import from_last_accessed
from bot.evidence.cloudtrail import read_log_folder
from bot.teams import Exclusions

log = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 90
# Nothing was logged before AWS began; earlier dates would also push the window out of range.
EARLIEST_AS_OF = date(2006, 1, 1)


def load_access_advisor(path: Path) -> dict[str, UsageEvidence]:
    """Read a file mapping principal ARN to `aws iam get-service-last-accessed-details` output."""
    raw = read_json_file(path)
    if not isinstance(raw, dict):
        raise PareError(f"{path}: expected an object mapping principal ARNs to job results")
    out = {}
    for arn, details in raw.items():
        if not isinstance(details, dict) or "ServicesLastAccessed" not in details:
            raise PareError(f"{path}: the entry for {arn} is not a last-accessed job result")
        out[arn] = from_last_accessed(details)
    return out


def _as_of(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PareError(f"--as-of {text!r} is not a date like 2026-12-04") from None
    if day < EARLIEST_AS_OF:
        raise PareError(f"--as-of {text!r} is before AWS existed ({EARLIEST_AS_OF} or later)")
    return datetime.combine(day, datetime.min.time(), UTC)


def _window_days(value: int | None) -> int:
    if value is None:
        text = os.environ.get("PARE_WINDOW_DAYS") or str(DEFAULT_WINDOW_DAYS)
        try:
            value = int(text)
        except ValueError:
            raise PareError(f"PARE_WINDOW_DAYS {text[:20]!r} is not a number of days") from None
    if not 1 <= value <= 400:
        raise PareError("--window-days must be between 1 and 400 (AWS keeps 400 days)")
    return value


def run(
    authorization_details: Path,
    *,
    access_advisor: Path | None = None,
    cloudtrail: Path | None = None,
    as_of: datetime,
    window_days: int = DEFAULT_WINDOW_DAYS,
    exclusions: Exclusions | None = None,
) -> list[PrincipalAnalysis]:
    """Analyse an export with whatever evidence files were given."""
    principals = load_export(authorization_details)
    arns = [p.arn for p in principals]
    evidence: dict[str, list[UsageEvidence]] = {arn: [] for arn in arns}
    if cloudtrail is not None:
        if not cloudtrail.is_dir():
            raise PareError(f"{cloudtrail}: not a folder of CloudTrail log files")
        readout = read_log_folder(cloudtrail)
        for path in readout.broken_files:
            print(f"pare: skipped broken CloudTrail file {path}", file=sys.stderr)
        for why, count in sorted(readout.skipped.items()):
            print(f"pare: skipped {count} unreadable CloudTrail records ({why})", file=sys.stderr)
        # Say what the logs cover: a trail that misses the window explains "unknown" rows.
        span = (
            f"{readout.covered_from:%Y-%m-%d %H:%M} to {readout.covered_to:%Y-%m-%d %H:%M} UTC"
            if readout.covered_from and readout.covered_to
            else "no time at all"
        )
        gap = readout.gap()
        if gap is not None:
            span += f"; nothing from {gap[0]} to {gap[1]}, so only the days after count"
        print(f"pare: CloudTrail: {readout.summary()}; covers {span}", file=sys.stderr)
        for arn, items in readout.evidence_for(arns).items():
            evidence[arn].extend(items)
    if access_advisor is not None:
        for arn, item in load_access_advisor(access_advisor).items():
            if arn in evidence:
                evidence[arn].append(item)
    return analyze(
        principals,
        evidence,
        as_of=as_of,
        window_days=window_days,
        exclusions=exclusions or Exclusions(),
    )


def to_json(results: list[PrincipalAnalysis]) -> list[dict[str, Any]]:
    """Return one object per finding or kept grant, as `--json` prints them."""
    rows = []
    for result in results:
        for finding in result.findings:
            row = finding.to_json()
            row["data_state"] = result.data_state
            rows.append(row)
    return rows


def print_table(results: list[PrincipalAnalysis], out: TextIO, status: str | None = None) -> None:
    """Print the findings as a table a person can read, optionally only one status."""
    rows = []
    counts: Counter[str] = Counter()
    for result in results:
        principal = result.principal
        name = principal.arn.split(":", 5)[-1]
        for f in result.findings:
            counts[f.status] += 1
            if status and f.status != status:
                continue
            what = f.service or f.resource_id or ""
            if f.actions:
                what += f" ({len(f.actions)} action{'' if len(f.actions) == 1 else 's'})"
            rows.append((f.status, f.kind, principal.account_id, name, what, f.reason))
    titles = ("status", "kind", "account", "principal", "what", "reason")
    widths = [max([len(t)] + [len(r[i]) for r in rows]) for i, t in enumerate(titles[:-1])]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[-1]

    print(line(titles), file=out)
    for row in rows:
        print(line(row), file=out)
    total = sum(counts.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing"
    print(
        f"\n{len(results)} principals; {total} findings and kept grants: {summary}",
        file=out,
    )


def run_analyze(args: argparse.Namespace) -> int:
    """Run `pare analyze` from parsed arguments."""
    window = _window_days(args.window_days)
    results = run(
        args.authorization_details,
        access_advisor=args.access_advisor,
        cloudtrail=args.cloudtrail,
        as_of=_as_of(args.as_of),
        window_days=window,
    )
    if args.json:
        rows = to_json(results)
        if args.status:
            rows = [r for r in rows if r["status"] == args.status]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(results, sys.stdout, status=args.status)
    return 0
