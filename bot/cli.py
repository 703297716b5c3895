"""The `pare` command: one subcommand per job, each a thin call into `bot`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from bot import logs
from bot.errors import PareError

log = logging.getLogger(__name__)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def load_settings():  # type: ignore[no-untyped-def]
    """Read settings from the environment, turning validation errors into one clear line."""
    from bot.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = first["loc"][0] if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise PareError(f"environment variable {name}: {message}") from None


def database_problem(exc: DBAPIError) -> str:
    """Explain a database error in one line, without the URL (it may hold a password)."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    if "no such table" in detail or "does not exist" in detail and "relation" in detail:
        return f"the database is not migrated ({detail}): run `pare db upgrade` first"
    if "unable to open database file" in detail:
        return "cannot open the SQLite file of DATABASE_URL: does its folder exist?"
    return f"database error: {detail}"


def _as_of(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    except ValueError:
        raise PareError(f"--as-of {text!r} is not a date like 2026-12-04") from None


def cmd_db(args: argparse.Namespace) -> int:
    from bot import migrate

    settings = load_settings()
    if args.action == "upgrade":
        migrate.upgrade(settings.database_url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(settings.database_url, args.revision or "-1")
    print(f"schema revision: {migrate.current(settings.database_url) or 'empty'}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from bot.scan import run_scan

    options = {"accounts": args.account or None, "resume": args.resume, "progress": sys.stderr}
    report = run_scan(load_settings(), as_of=_as_of(args.as_of), **options)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_analyze(args: argparse.Namespace) -> int:
    from bot.offline import run_analyze

    return run_analyze(args)


def cmd_digest(args: argparse.Namespace) -> int:
    from bot.digest import run_digest_command

    return run_digest_command(args)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bot.leaderboard import run_leaderboard_command

    return run_leaderboard_command(load_settings(), post=not args.print_only)


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.web import serve

    serve(load_settings(), port=args.port, with_scheduler=not args.no_scheduler)
    return 0


def cmd_socket(args: argparse.Namespace) -> int:
    from bot.web import serve_socket_mode

    serve_socket_mode(load_settings(), with_scheduler=not args.no_scheduler)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from bot.scheduler import run_forever

    run_forever(load_settings())
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from bot.db import Database
    from bot.removal import apply_approved

    settings = load_settings()
    db = Database(settings.database_url)
    report = apply_approved(
        settings, db, commit=args.commit, as_of=_as_of(args.as_of), accounts=args.account
    )
    print(report.summary())
    return 0 if not report.problems else 1


def cmd_undo(args: argparse.Namespace) -> int:
    from bot.db import Database
    from bot.removal import undo_change

    settings = load_settings()
    import getpass

    user = f"cli:{getpass.getuser()}"
    db = Database(settings.database_url)
    result = undo_change(settings, db, args.change_id, only=args.only, user=user)
    print(result.line())
    return 0 if result.status == "applied" else 1


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from bot.db import Database
    from bot.removal.history import history, render

    events = history(Database(load_settings().database_url), args.principal)
    print(json.dumps(events, indent=2) if args.json else render(events))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return run_demo(Path(args.workdir), keep_going=args.keep_serving)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pare", description="Keep AWS permissions shrinking, team by team, from Slack."
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=LEVELS,
        help="default INFO (ERROR for the demo)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("db", help="migrate the database schema")
    p.add_argument("action", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", help="target revision (default: head, or one down)")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("scan", help="read IAM in every configured account and record findings")
    p.add_argument("--account", action="append", help="scan only this account id (repeatable)")
    p.add_argument("--as-of", help="judge use as of this date (default: now)")
    p.add_argument("--resume", action="store_true", help="skip accounts already done today")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("analyze", help="analyse exported IAM data offline (no AWS, no database)")
    p.add_argument(
        "--authorization-details",
        required=True,
        type=Path,
        metavar="FILE",
        help="what `aws iam get-account-authorization-details` printed",
    )
    p.add_argument(
        "--access-advisor",
        type=Path,
        metavar="FILE",
        help="JSON mapping principal ARN to `aws iam get-service-last-accessed-details` output",
    )
    p.add_argument("--cloudtrail", type=Path, metavar="DIR", help="folder of CloudTrail log files")
    p.add_argument("--as-of", metavar="DATE", help="judge use as of this day, YYYY-MM-DD")
    p.add_argument(
        "--window-days",
        type=int,
        default=None,
        metavar="N",
        help="tracking window in days (default: PARE_WINDOW_DAYS, else 90)",
    )
    p.add_argument(
        "--status",
        choices=["unused", "unknown", "too_new", "excluded"],
        help="show only findings with this status",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("digest", help="post a team's digest now")
    p.add_argument("--team", required=True)
    p.add_argument("--dry-run", action="store_true", help="print the payloads, send nothing")
    p.add_argument("--findings", type=Path, help="take findings from a `pare analyze --json` file")
    p.set_defaults(func=cmd_digest)

    p = sub.add_parser("leaderboard", help="post the teams ranked by reduction progress")
    p.add_argument("--print-only", action="store_true", help="print it, post nothing")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("serve", help="run the Slack app over HTTP, with the scheduler")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--no-scheduler", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("socket", help="run the Slack app over Socket Mode, with the scheduler")
    p.add_argument("--no-scheduler", action="store_true")
    p.set_defaults(func=cmd_socket)

    p = sub.add_parser("scheduler", help="run only the scheduler (digests, scans, leaderboard)")
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("apply", help="apply approved removals (a dry run unless committing)")
    p.add_argument("--commit", action="store_true", help="change AWS, not only print and record")
    p.add_argument("--account", action="append", help="only this account id (repeatable)")
    p.add_argument("--as-of", help="judge the re-checked evidence as of this date")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("undo", help="restore a change's before-state, whole or in part")
    p.add_argument("change_id", metavar="CHANGE_ID")
    p.add_argument("--only", nargs="+", metavar="ACTION", help="restore only these actions")
    p.set_defaults(func=cmd_undo)

    p = sub.add_parser("history", help="every finding, decision, change and undo of a principal")
    p.add_argument("--principal", required=True, metavar="ARN")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("demo", help="run the whole loop locally: moto AWS, a local Slack stand-in")
    p.add_argument("--workdir", default="demo-output", help="where the SQLite file is left")
    p.add_argument("--keep-serving", action="store_true", help="keep the servers up afterwards")
    p.set_defaults(func=cmd_demo)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pare command line."""
    args = build_parser().parse_args(argv)
    try:
        level = args.log_level
        if level is None:
            # The demo narrates what happens; its log lines would only bury the story.
            level = "ERROR" if args.command == "demo" else os.environ.get("PARE_LOG_LEVEL")
            if (level or "INFO").upper() not in LEVELS:
                raise PareError(f"PARE_LOG_LEVEL {level!r} is not one of {', '.join(LEVELS)}")
            level = (level or "INFO").upper()
        as_json = os.environ.get("PARE_LOG_JSON", "").lower() in {"1", "true", "yes"}
        logs.configure(level, as_json=as_json)
        return args.func(args)
    except PareError as exc:
        print(f"pare: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        print(f"pare: {database_problem(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
