"""Block Kit builders, one per message, driven by stored state.

Every limit Slack documents is enforced here, after escaping: at most 50 blocks a message,
3,000 characters a section, 75 a button label, 2,000 a button value, 255 an id. Messages are
also kept small (Slack has refused messages far below 40,000 characters), so long digests are
paged across a thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bot.slack import ids, text
from bot.slack.escape import clip, clip_escaped, escape

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
MAX_HEADER = 150
MAX_FALLBACK = 300
# Well under what Slack has refused, so a page always posts.
MESSAGE_BUDGET = 10_000
ROWS_PER_MESSAGE = 12
# A row's text stays far below a section's limit so several rows share a page.
ROW_TEXT_LIMIT = 1200
LEADERBOARD_TOP = 40

Block = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """A decision as a digest row shows it."""

    kind: str
    user: str
    at: datetime
    until: datetime | None = None


@dataclass(frozen=True)
class Row:
    """One digest row: the frozen view of a finding and, once decided, its outcome."""

    item_id: str
    shown: dict[str, Any]
    outcome: Outcome | None = None


@dataclass
class Payload:
    """One chat.postMessage or chat.update body: the fallback text and the blocks."""

    text: str
    blocks: list[Block] = field(default_factory=list)

    def size(self) -> int:
        """Return the serialised size of the blocks."""
        return len(json.dumps(self.blocks, ensure_ascii=False))


@dataclass(frozen=True)
class DigestHead:
    """What the first message of a digest says above its rows."""

    team: str
    offered: int
    unknown: int
    too_new: int
    champions: tuple[str, ...]
    defer_days: int


def _section(mrkdwn: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn[:MAX_SECTION]}}
    if block_id:
        block["block_id"] = block_id[:MAX_ID]
    return block


def _context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:MAX_SECTION]}]}


def _header(plain: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(plain, MAX_HEADER)}}


def _button(label: str, action_id: str, value: str, style: str | None = None) -> Block:
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError("a button value is an opaque row id; this one is too long")
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": clip(label, MAX_BUTTON_TEXT)},
        "action_id": action_id[:MAX_ID],
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _actions_text(actions: list[str], room: int) -> str:
    """Return as many escaped actions as fit in room characters, then how many were left."""
    shown: list[str] = []
    used = 0
    for index, action in enumerate(actions):
        piece = f"`{escape(action)}`"
        tail = len(text.more_actions(len(actions) - index)) + 2
        if used + len(piece) + 2 + tail > room:
            return ", ".join(shown) + text.more_actions(len(actions) - index)
        shown.append(piece)
        used += len(piece) + 2
    return ", ".join(shown)


def row_text(shown: dict[str, Any]) -> str:
    """Return a row's mrkdwn, escaped and within ROW_TEXT_LIMIT."""
    title = text.row_title(
        str(shown.get("kind", "")),
        escape(shown.get("principal", "")),
        escape(shown.get("principal_kind", "")),
        escape(shown.get("account", "")),
    )
    actions = [str(a) for a in shown.get("actions") or []]
    what = text.row_what(
        str(shown.get("kind", "")),
        escape(shown.get("service")),
        actions,
        escape(shown.get("resource_id")),
    )
    evidence = text.row_evidence(
        escape(shown.get("last_used") or "") or None, escape(shown.get("source", ""))
    )
    reason = escape(shown.get("reason") or "")
    fixed = f"{title}\n{what}\n{evidence}"
    if actions:
        room = ROW_TEXT_LIMIT - len(fixed) - 1
        fixed = f"{title}\n{what}{_actions_text(actions, room)}\n{evidence}"
    body = fixed + (f"\n_{reason}_" if reason else "")
    return clip_escaped(body, ROW_TEXT_LIMIT)


def row_blocks(row: Row) -> list[Block]:
    """Return a row's two blocks: its text, then its buttons or its outcome."""
    blocks = [_section(row_text(row.shown), ids.item_block(row.item_id))]
    if row.outcome is None:
        blocks.append(
            {
                "type": "actions",
                "block_id": ids.actions_block(row.item_id),
                "elements": [
                    _button(text.APPROVE_BUTTON, ids.APPROVE, row.item_id, "primary"),
                    _button(text.DEFER_BUTTON, ids.DEFER, row.item_id),
                ],
            }
        )
    else:
        o = row.outcome
        blocks.append(_context(text.outcome(o.kind, o.user, o.at, o.until)))
    return blocks


def head_blocks(head: DigestHead, parts: int) -> list[Block]:
    """Return the blocks above the rows of a digest's first message."""
    blocks = [
        _header(text.digest_header(head.team)),
        _section(text.digest_summary(head.offered, head.unknown, head.too_new)),
        _context(text.digest_howto(list(head.champions), head.defer_days)),
    ]
    if parts > 1:
        blocks.append(_context(text.digest_more_parts(parts)))
    return blocks


def part_blocks(team: str, part: int, parts: int) -> list[Block]:
    """Return the label above the rows of a thread reply."""
    return [_context(escape(text.digest_part_label(team, part, parts)))]


HEAD_RESERVE = 4


def paginate(rows: list[Row]) -> list[list[Row]]:
    """Split rows into pages that each fit one small message (first page leaves head room)."""
    pages: list[list[Row]] = [[]]
    size = 0
    for row in rows:
        row_size = len(json.dumps(row_blocks(row), ensure_ascii=False))
        page = pages[-1]
        full_blocks = 2 * (len(page) + 1) + HEAD_RESERVE > MAX_BLOCKS
        if page and (
            len(page) >= ROWS_PER_MESSAGE or size + row_size > MESSAGE_BUDGET or full_blocks
        ):
            pages.append([])
            size = 0
        pages[-1].append(row)
        size += row_size
    return pages


def digest_message(head: DigestHead, rows: list[Row], part: int, parts: int) -> Payload:
    """Return one message of a digest: part 1 carries the head, later parts a label."""
    team = escape(head.team)
    if part == 1:
        blocks = head_blocks(replace(head, team=team), parts)
        fallback = text.digest_fallback(team, head.offered)
    else:
        blocks = part_blocks(head.team, part, parts)
        fallback = text.digest_part_fallback(team, part, parts)
    for row in rows:
        blocks.extend(row_blocks(row))
    if len(blocks) > MAX_BLOCKS:
        raise ValueError("a digest page has more blocks than Slack allows; paginate() first")
    return Payload(clip(fallback, MAX_FALLBACK), blocks)


def empty_digest(team: str) -> Payload:
    """Return the message for a team with nothing to review."""
    message = text.nothing_to_review(escape(team))
    return Payload(clip(message, MAX_FALLBACK), [_section(message)])


@dataclass(frozen=True)
class Standing:
    """One team's place on the leaderboard."""

    team: str
    resolved: int
    found: int


def leaderboard(standings: list[Standing]) -> Payload:
    """Return the leaderboard message: the top teams, then how many more."""
    blocks: list[Block] = [_header(text.LEADERBOARD_HEADER)]
    lines = [
        text.leaderboard_line(rank, escape(s.team), s.resolved, s.found)
        for rank, s in enumerate(standings[:LEADERBOARD_TOP], start=1)
    ]
    if len(standings) > LEADERBOARD_TOP:
        lines.append(text.leaderboard_more(len(standings) - LEADERBOARD_TOP))
    blocks.extend(_section(chunk) for chunk in _chunks(lines))
    blocks.append(_context(text.LEADERBOARD_EXPLAIN))
    return Payload(text.leaderboard_fallback(len(standings)), blocks[:MAX_BLOCKS])


def _chunks(lines: list[str], limit: int = MAX_SECTION) -> list[str]:
    """Join lines into texts of at most limit characters each."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = clip_escaped(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def answer(lines: list[str], fallback: str) -> Payload:
    """Return an ephemeral answer (help, status, role, refusal) built from mrkdwn lines."""
    sections = [_section(chunk) for chunk in _chunks(lines)]
    return Payload(clip(fallback, MAX_FALLBACK), sections[:MAX_BLOCKS])
