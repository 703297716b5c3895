"""Property-based: whatever AWS and users name things, every message stays within Slack's limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.catalog import catalogue
from bot.slack import blocks, ids

EC2 = sorted(catalogue().actions("ec2"))
# Our own templates may emit these; anything else in angle brackets came from outside.
OURS = re.compile(r"<@[UW][A-Z0-9]+>|<!date\^\d+\^[^|>]*\|[^>]*>|<#[CGD][A-Z0-9]+>")
ENTITY = re.compile(r"&(?!(amp|lt|gt);)")
HOSTILE = ["<!channel>", "<!here>", "<@U0ALICE>", "<https://evil.example|click>", "&", "&amp;"]

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(min_size=0, max_size=40)), max_size=12
).map("".join)
names = st.one_of(hostile_text.map(lambda t: t[:128]), st.just("x" * 128))
actions = st.one_of(
    st.just(EC2),
    st.lists(hostile_text.map(lambda t: f"svc:{t}"[:200]), max_size=60),
    st.none(),
)
kinds = st.sampled_from(
    ["unused_permission", "unused_role", "unused_access_key", "unused_password"]
)
shown = st.fixed_dictionaries(
    {
        "principal": names,
        "principal_kind": st.sampled_from(["role", "user"]),
        "arn": st.sampled_from([f"arn:aws:iam::111122223333:role/r{i}" for i in range(6)]),
        "account": hostile_text.map(lambda t: t[:150]),
        "team": st.one_of(st.none(), hostile_text.map(lambda t: t[:80])),
        "data_state": st.sampled_from(["complete", "incomplete"]),
        "kind": kinds,
        "service": st.one_of(st.none(), hostile_text.map(lambda t: t[:64])),
        "actions": actions,
        "resource_id": st.one_of(st.none(), hostile_text.map(lambda t: t[:128])),
        "last_used": st.one_of(st.none(), st.just("2026-01-02")),
        "source": st.sampled_from(["cloudtrail", "access_advisor", "<!channel>&"]),
        "reason": st.one_of(hostile_text, st.just(("<!channel> & " * 800)[:9000])),
    }
)
AT = datetime(2026, 12, 4, 9, tzinfo=UTC)
outcomes = st.one_of(
    st.none(),
    st.builds(
        blocks.Outcome,
        kind=st.sampled_from(["approve", "defer", "exempt"]),
        user=st.just("U0ALICE"),
        at=st.just(AT),
        until=st.none(),
        reason=st.one_of(st.none(), hostile_text),
    ),
)
rows = st.lists(st.tuples(shown, outcomes), min_size=1, max_size=40).map(
    lambda found: [blocks.Row(str(i + 1), s, o) for i, (s, o) in enumerate(found)]
)


def texts(value: object) -> list[str]:
    """Return every mrkdwn or plain text string in a block tree."""
    found: list[str] = []
    if isinstance(value, dict):
        if value.get("type") in ("mrkdwn", "plain_text") and isinstance(value.get("text"), str):
            found.append(value["text"])
        for child in value.values():
            found.extend(texts(child))
    elif isinstance(value, list):
        for child in value:
            found.extend(texts(child))
    return found


def assert_within_limits(payload: blocks.Payload, message: bool = True) -> None:
    """Check one message (or view) against every limit Pare promises, after escaping."""
    assert len(payload.blocks) <= blocks.MAX_BLOCKS
    assert len(payload.text) <= blocks.MAX_FALLBACK
    if message:
        # Slack has refused messages near 13,000 characters; ours stay well below.
        assert len(json.dumps(payload.blocks, ensure_ascii=False)) < 12_000
    for block in payload.blocks:
        assert len(block.get("block_id", "")) <= blocks.MAX_ID
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= blocks.MAX_SECTION
        buttons = [e for e in block.get("elements", []) if e.get("type") == "button"]
        if isinstance(block.get("accessory"), dict):
            buttons.append(block["accessory"])
        for button in buttons:
            assert len(button["text"]["text"]) <= blocks.MAX_BUTTON_TEXT
            assert len(button["value"]) <= blocks.MAX_BUTTON_VALUE
            assert len(button["action_id"]) <= blocks.MAX_ID
            # Opaque row ids, never data (a dry run marks its made-up ids).
            assert re.fullmatch(r"(dry-run-)?\d+", button["value"])
    for value in texts(payload.blocks):
        outside = OURS.sub("", value)
        assert "<" not in outside and ">" not in outside, value[:200]
        assert not ENTITY.search(outside), value[:200]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_every_page_of_any_digest_stays_within_slacks_limits(found):
    head = blocks.DigestHead("<!channel> & team" * 10, len(found), 5, 2, ("U0ALICE",), 30, 3)
    pages = blocks.paginate(found)

    for number, page in enumerate(pages, start=1):
        previous = pages[number - 2][-1] if number > 1 else None
        assert_within_limits(blocks.digest_message(head, page, number, len(pages), previous))
    # Nothing lost, nothing shown twice, order kept.
    assert [r.item_id for page in pages for r in page] == [r.item_id for r in found]


@settings(max_examples=30, deadline=None)
@given(shown)
def test_one_role_with_every_ec2_action_fits_one_row(one):
    one = {**one, "kind": "unused_permission", "service": "ec2", "actions": EC2}
    [page] = blocks.paginate([blocks.Row("1", one)])
    message = blocks.digest_message(blocks.DigestHead("t", 1, 0, 0, (), 30, 1), page, 1, 1)

    assert_within_limits(message)
    row = next(b for b in message.blocks if b.get("block_id") == ids.item_block("1"))
    assert f"{len(EC2)} unused action(s)" in row["text"]["text"]
    assert "… and" in row["text"]["text"]


@settings(max_examples=40, deadline=None)
@given(shown, st.sampled_from(["defer", "exempt"]), hostile_text)
def test_decision_modals_stay_within_limits(one, kind, url_tail):
    origin = {"channel": "C0PAY", "ts": "1.2", "response_url": "http://127.0.0.1/" + url_tail}
    view = blocks.decision_modal(kind, "42", blocks.subject(one), 30, origin)

    assert len(view["private_metadata"]) <= blocks.MAX_PRIVATE_METADATA
    assert len(view["title"]["text"]) <= blocks.MAX_VIEW_TITLE
    assert json.loads(view["private_metadata"])["item"] == "42"
    assert_within_limits(blocks.Payload("x", view["blocks"]), message=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(shown, max_size=40), hostile_text)
def test_app_home_stays_within_limits(many, reason):
    exemptions = [
        blocks.HomeExemption(i + 1, "<!here>", s, "U0ALICE", AT, reason * 50)
        for i, s in enumerate(many)
    ]
    teams = [blocks.HomeTeam("<!channel>", "C0PAY", 3)]
    view = blocks.home_view(teams, exemptions)

    assert len(view["blocks"]) <= blocks.MAX_HOME_BLOCKS
    assert_within_limits(blocks.Payload("x", view["blocks"][: blocks.MAX_BLOCKS]), message=False)
