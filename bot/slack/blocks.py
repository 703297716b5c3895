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
    reason: str | None = None
    revoked: bool = False


@dataclass(frozen=True)
class Row:
    """One digest row: the frozen view of a finding and, once decided, its outcome."""

    item_id: str
    shown: dict[str, Any]
    outcome: Outcome | None = None

    @property
    def principal(self) -> str:
        """Return the key that groups rows by principal (its ARN, else its name and account)."""
        shown = self.shown
        return str(shown.get("arn") or f"{shown.get('account')}/{shown.get('principal')}")


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
    principals: int = 0


def _section(mrkdwn: str, block_id: str | None = None, accessory: Block | None = None) -> Block:
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn[:MAX_SECTION]}}
    if block_id:
        block["block_id"] = block_id[:MAX_ID]
    if accessory:
        block["accessory"] = accessory
    return block


def _context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:MAX_SECTION]}]}


def _header(plain: str) -> Block:
    # Callers may pass escaped text; cutting must not leave half an entity such as "&am".
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": clip_escaped(plain, MAX_HEADER)},
    }


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


def principal_text(rows: list[Row], continued: bool = False) -> str:
    """Return a principal's heading, escaped and within ROW_TEXT_LIMIT."""
    shown = rows[0].shown
    sources = sorted({escape(r.shown.get("source") or "") for r in rows} - {""})
    heading = text.principal_heading(
        escape(shown.get("principal", "")),
        escape(shown.get("principal_kind", "")),
        escape(shown.get("account", "")),
        escape(shown["team"]) if shown.get("team") else None,
        escape(shown.get("data_state") or "complete"),
        sources,
        continued,
    )
    return clip_escaped(heading, ROW_TEXT_LIMIT)


def row_text(shown: dict[str, Any]) -> str:
    """Return a row's mrkdwn (what is unused, when last used, why), escaped and bounded."""
    kind = str(shown.get("kind", ""))
    actions = [str(a) for a in shown.get("actions") or []]
    what = text.row_what(
        kind, escape(shown.get("service")), actions, escape(shown.get("resource_id"))
    )
    head = f"{text.row_title(kind)}: {what}"
    evidence = text.row_evidence(
        escape(shown.get("last_used") or "") or None, escape(shown.get("source", ""))
    )
    reason = escape(shown.get("reason") or "")
    tail = f"\n{evidence}" + (f"\n{text.row_why(reason)}" if reason else "")
    if actions:
        # The actions get what room the rest leaves; the reason is cut last, and never the head.
        room = ROW_TEXT_LIMIT - len(head) - min(len(tail), ROW_TEXT_LIMIT // 3)
        head += _actions_text(actions, max(room, 40))
    return clip_escaped(head + tail, ROW_TEXT_LIMIT)


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
                    _button(text.EXEMPT_BUTTON, ids.EXEMPT, row.item_id),
                ],
            }
        )
    else:
        o = row.outcome
        reason = escape(clip(o.reason, 300)) if o.reason else None
        blocks.append(_context(text.outcome(o.kind, o.user, o.at, o.until, reason, o.revoked)))
    return blocks


def group_blocks(rows: list[Row], continued: bool = False) -> list[Block]:
    """Return one principal's blocks: its heading (with approve-all), then its rows."""
    undecided = [r for r in rows if r.outcome is None]
    accessory = None
    if len(undecided) > 1:
        # The value is one of the principal's own row ids; the handler finds the rest.
        label = text.approve_all_button(len(undecided))
        accessory = _button(label, ids.APPROVE_ALL, undecided[0].item_id)
    heading = _section(
        principal_text(rows, continued), ids.principal_block(rows[0].item_id), accessory
    )
    blocks = [heading]
    for row in rows:
        blocks.extend(row_blocks(row))
    return blocks


def _groups(rows: list[Row]) -> list[list[Row]]:
    """Split rows into runs of the same principal, keeping their order."""
    groups: list[list[Row]] = []
    for row in rows:
        if groups and groups[-1][0].principal == row.principal:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def rows_blocks(rows: list[Row], previous: Row | None = None) -> list[Block]:
    """Return a page's row blocks grouped by principal; previous is the last row before it."""
    blocks: list[Block] = []
    for index, group in enumerate(_groups(rows)):
        continued = index == 0 and previous is not None and previous.principal == group[0].principal
        blocks.extend(group_blocks(group, continued))
    return blocks


def head_blocks(head: DigestHead, parts: int) -> list[Block]:
    """Return the blocks above the rows of a digest's first message."""
    blocks = [
        _header(text.digest_header(head.team)),
        _section(text.digest_summary(head.offered, head.principals, head.unknown, head.too_new)),
        _context(text.digest_howto(list(head.champions), head.defer_days)),
    ]
    if parts > 1:
        blocks.append(_context(text.digest_more_parts(parts)))
    return blocks


def part_blocks(team: str, part: int, parts: int) -> list[Block]:
    """Return the label above the rows of a thread reply."""
    return [_context(escape(text.digest_part_label(team, part, parts)))]


HEAD_RESERVE = 4


def _fits(page: list[Row], previous: Row | None) -> bool:
    blocks = rows_blocks(page, previous)
    size = len(json.dumps(blocks, ensure_ascii=False))
    return (
        len(page) <= ROWS_PER_MESSAGE
        and len(blocks) + HEAD_RESERVE <= MAX_BLOCKS
        and size <= MESSAGE_BUDGET
    )


def paginate(rows: list[Row]) -> list[list[Row]]:
    """Split rows into pages that each fit one small message (every page leaves head room)."""
    pages: list[list[Row]] = [[]]
    previous: Row | None = None
    for row in rows:
        page = pages[-1]
        if page and not _fits([*page, row], previous):
            previous = page[-1]
            pages.append([])
        pages[-1].append(row)
    return pages


def digest_message(
    head: DigestHead, rows: list[Row], part: int, parts: int, previous: Row | None = None
) -> Payload:
    """Return one message of a digest: part 1 carries the head, later parts a label."""
    team = escape(head.team)
    if part == 1:
        blocks = head_blocks(replace(head, team=team), parts)
        fallback = text.digest_fallback(team, head.offered)
    else:
        blocks = part_blocks(head.team, part, parts)
        fallback = text.digest_part_fallback(team, part, parts)
    blocks.extend(rows_blocks(rows, previous))
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


MAX_PRIVATE_METADATA = 3000
MAX_VIEW_TITLE = 24
MAX_OPTION_TEXT = 75
MAX_HOME_BLOCKS = 100
HOME_EXEMPTIONS_SHOWN = 20


def _plain(value: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(value, limit)}


def decision_modal(
    kind: str, item_id: str, subject: str, defer_days: int, origin: dict[str, Any]
) -> Block:
    """Return the Defer (period and reason) or Exempt (reason) modal for one digest row."""
    metadata = json.dumps({"item": item_id, **origin}, separators=(",", ":"))
    if len(metadata) > MAX_PRIVATE_METADATA:
        # The origin is ours (channel, ts, response_url); drop it rather than fail the modal.
        metadata = json.dumps({"item": item_id})
    body: list[Block] = [_section(text.modal_subject(subject))]
    if kind == "defer":
        options = [
            {"text": _plain(text.period_option(d), MAX_OPTION_TEXT), "value": str(d)}
            for d in sorted({*text.DEFER_PERIODS, defer_days})
        ]
        initial = next(o for o in options if o["value"] == str(defer_days))
        body.append(
            {
                "type": "input",
                "block_id": ids.PERIOD_BLOCK,
                "label": _plain(text.PERIOD_LABEL, 2000),
                "element": {
                    "type": "static_select",
                    "action_id": ids.PERIOD_INPUT,
                    "options": options,
                    "initial_option": initial,
                },
            }
        )
    hint = text.DEFER_REASON_HINT if kind == "defer" else text.EXEMPT_REASON_HINT
    body.append(
        {
            "type": "input",
            "block_id": ids.REASON_BLOCK,
            "optional": kind == "defer",
            "label": _plain(text.REASON_LABEL, 2000),
            "hint": _plain(hint, 2000),
            "element": {
                "type": "plain_text_input",
                "action_id": ids.REASON_INPUT,
                "multiline": True,
                "max_length": 1000,
            },
        }
    )
    title = text.DEFER_TITLE if kind == "defer" else text.EXEMPT_TITLE
    submit = text.SUBMIT_DEFER if kind == "defer" else text.SUBMIT_EXEMPT
    return {
        "type": "modal",
        "callback_id": ids.VIEW_BY_KIND[kind],
        "private_metadata": metadata,
        "title": _plain(title, MAX_VIEW_TITLE),
        "submit": _plain(submit, MAX_VIEW_TITLE),
        "close": _plain(text.CANCEL, MAX_VIEW_TITLE),
        "blocks": body,
    }


def subject(shown: dict[str, Any]) -> str:
    """Return one escaped line naming a row's principal and what would go."""
    kind = str(shown.get("kind", ""))
    actions = [str(a) for a in shown.get("actions") or []]
    what = text.row_what(
        kind, escape(shown.get("service")), actions, escape(shown.get("resource_id"))
    )
    line = f"`{escape(shown.get('principal', ''))}` in {escape(shown.get('account', ''))}: "
    return clip_escaped(line + what.rstrip(": "), ROW_TEXT_LIMIT)


@dataclass(frozen=True)
class HomeTeam:
    """One of the user's teams as the App Home shows it."""

    name: str
    channel: str
    open: int


@dataclass(frozen=True)
class HomeExemption:
    """One standing exemption the user may revoke."""

    decision_id: int
    team: str
    shown: dict[str, Any]
    user: str
    at: datetime
    reason: str


def home_view(teams: list[HomeTeam], exemptions: list[HomeExemption]) -> Block:
    """Return the App Home: the user's teams, their open counts, and standing exemptions."""
    body: list[Block] = [_header(text.HOME_HEADER)]
    if not teams:
        body.append(_section(text.HOME_NO_TEAMS))
    for team in teams:
        body.append(_section(text.home_team(escape(team.name), team.channel, team.open)))
    if teams:
        body.append({"type": "divider"})
        body.append(_section(text.HOME_EXEMPTIONS if exemptions else text.HOME_NO_EXEMPTIONS))
    for exemption in exemptions[:HOME_EXEMPTIONS_SHOWN]:
        shown = exemption.shown
        kind = str(shown.get("kind", ""))
        what = text.kind_label(kind)
        if shown.get("service"):
            what += f" `{escape(shown['service'])}`"
        line = text.home_exemption(
            what,
            escape(shown.get("principal", "")),
            escape(exemption.team),
            exemption.user,
            exemption.at,
            escape(clip(exemption.reason, 500)),
        )
        button = _button(text.REVOKE_BUTTON, ids.REVOKE, str(exemption.decision_id), "danger")
        body.append(_section(clip_escaped(line, ROW_TEXT_LIMIT), accessory=button))
    if len(exemptions) > HOME_EXEMPTIONS_SHOWN:
        body.append(_context(text.home_more(len(exemptions) - HOME_EXEMPTIONS_SHOWN)))
    return {"type": "home", "blocks": body[:MAX_HOME_BLOCKS]}


def escalation(lines: list[str]) -> Payload:
    """Return the escalation message: one line per team that needs a nudge."""
    body: list[Block] = [_header(text.ESCALATION_HEADER)]
    chunks = _chunks(lines)
    body.extend(_section(chunk) for chunk in chunks[: MAX_BLOCKS - 2])
    body.append(_context(text.ESCALATION_EXPLAIN))
    return Payload(clip(text.escalation_fallback(len(lines)), MAX_FALLBACK), body)
