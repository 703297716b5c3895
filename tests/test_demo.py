"""`pare demo`, as a new user runs it: the whole loop, on moto and the local Slack stand-in."""

from __future__ import annotations

import sqlite3

from bot.cli import main


def test_demo_shows_the_whole_loop(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out

    # The real scan read all three accounts and reported the unowned principal.
    assert "payments-prod (111122223333): 7 principals read" in out
    assert "data-prod (444455556666)" in out and "shared-tools (777788889999)" in out
    assert "unowned principal: experiment-sandbox" in out

    # Each team's digest reached its own channel.
    for team in ("payments", "data", "platform"):
        assert f"{team}: posted" in out
    channels = (workdir / "channels.txt").read_text()
    payments = channels.split("=== #payments")[1].split("=== #")[0]
    data = channels.split("=== #data")[1].split("=== #")[0]

    # The unused role and the key and password are offered; AWS-owned roles never are.
    assert "payments-batch-legacy" in payments
    assert "Unused access key" in data and "Unused console password" in data
    assert "AWSServiceRoleForSupport" not in channels
    assert "AWSReservedSSO" not in channels
    # The too-new role is counted, not offered, and its hostile tag notifies nobody.
    assert "payments-new-worker" not in channels
    assert "1 too new to judge" in payments
    assert "@channel" not in channels

    # Decisions show in the message; the bystander is refused and named champions.
    assert "Approved by @payments-champion" in payments
    assert "Deferred by @payments-champion" in payments
    assert "already approved this" in payments
    assert "Approved by @data-champion" in data
    assert "(only visible to bystander)" in data
    assert "Only data's champions can decide its findings: @data-champion" in data

    # Approved removals are dry-run first, then applied in the moto account and undone.
    removal = out.split("== 5.")[1].split("== 6.")[0]
    assert "[dry_run] trim_permissions" in removal and "would: detach payments-api" in removal
    after_apply = removal.split("pare apply --commit:")[1].split("pare undo")[0]
    assert "AmazonDynamoDBReadOnlyAccess-pare1" in after_apply
    assert "Inactive" in after_apply
    after_undo = removal.split("after the undo, in AWS (moto):")[1]
    assert "payments-api managed policies: AmazonDynamoDBReadOnlyAccess," in after_undo
    # Each outcome is posted in its digest's thread with an Undo button; the undo too.
    assert "Removed* unused permissions on `payments-api`" in payments
    assert "[Undo]" in payments and "Undo of change" in payments
    assert "Removed* access key deactivated on `data-analyst`" in data

    # The leaderboard ranks every team; payments' only approval was undone, so the finding
    # is open again and counts as unresolved.
    board = channels.split("=== #pare-leaderboard")[1]
    assert board.index("data") < board.index("payments") < board.index("platform")
    assert "*payments*: 0% (0 of 16" in board and "*data*: 6% (1 of 18" in board

    # The SQLite file is left for inspection, with exactly the three decisions made.
    with sqlite3.connect(workdir / "pare.db") as conn:
        rows = conn.execute("select kind, decided_by from decisions order by id").fetchall()
    assert rows == [("approve", "U0PAYCHAMP"), ("defer", "U0PAYCHAMP"), ("approve", "U0DATACHAMP")]
