"""Every word Pare says in Slack, in one place so wording is reviewed together.

Values passed in here are already escaped by the caller; only Slack ids and dates formatted by
our own templates become mentions or links.
"""

from __future__ import annotations

from datetime import datetime

from bot.slack.escape import escape

KIND_LABELS = {
    "unused_role": "Unused role",
    "unused_access_key": "Unused access key",
    "unused_password": "Unused console password",
    "unused_permission": "Unused permissions",
}
DECISION_VERBS = {"approve": "approved", "defer": "deferred", "exempt": "exempted"}
DECISION_ICONS = {"approve": ":white_check_mark:", "defer": ":hourglass:", "exempt": ":shield:"}

APPROVE_BUTTON = "Approve removal"
DEFER_BUTTON = "Defer…"
EXEMPT_BUTTON = "Exempt…"
CONTINUED = "Continued in this thread."
NEVER = "never (in the window)"


def mention(user_id: str) -> str:
    """Return a user mention; user ids come from Slack or the teams file, never from AWS."""
    return f"<@{user_id}>"


def when(moment: datetime) -> str:
    """Return a date Slack shows in each reader's own time zone."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def day(moment: datetime) -> str:
    """Return a date without time, in the reader's time zone."""
    fallback = moment.strftime("%Y-%m-%d")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}}|{fallback}>"


def digest_header(team: str) -> str:
    """Return the digest's header line (plain text)."""
    return f"Unused AWS access for {team}"


def digest_fallback(team: str, offered: int) -> str:
    """Return the short top-level text of a digest (notifications and screen readers)."""
    return f"Pare: {offered} unused finding(s) for {team} to review"


def digest_part_fallback(team: str, part: int, parts: int) -> str:
    """Return the short text of a digest's thread reply."""
    return f"Pare: {team} digest, part {part} of {parts}"


def digest_summary(offered: int, principals: int, unknown: int, too_new: int) -> str:
    """Return the digest's summary: what is offered, on how many principals, what is counted."""
    text = f"*{offered}* finding(s) on *{principals}* principal(s) look unused and can be removed."
    kept = []
    if unknown:
        kept.append(f"{unknown} unknown (use cannot be proven either way)")
    if too_new:
        kept.append(f"{too_new} too new to judge")
    if kept:
        text += "\nNot offered, only counted: " + "; ".join(kept) + "."
    return text


def digest_howto(champions: list[str], defer_days: int) -> str:
    """Return who may decide and what the buttons do."""
    names = ", ".join(mention(c) for c in champions) or "nobody yet"
    return (
        f"Champions who decide: {names}. *Approve* removes it after a fresh check of the "
        f"evidence (reversible); *Defer* hides it for a while (default {defer_days} days); "
        "*Exempt* keeps it until the exemption is revoked (App Home)."
    )


def digest_more_parts(parts: int) -> str:
    """Return the note that a long digest continues in its thread."""
    return f"{CONTINUED} ({parts - 1} more message(s))"


def digest_part_label(team: str, part: int, parts: int) -> str:
    """Return the label at the top of a thread reply."""
    return f"{team}: part {part} of {parts}"


def nothing_to_review(team: str) -> str:
    """Return the text posted when a team has nothing open."""
    return f"Pare: nothing unused to review for {team} this time. :tada:"


def principal_heading(
    principal: str,
    principal_kind: str,
    account: str,
    team: str | None,
    data_state: str,
    sources: list[str],
    continued: bool = False,
) -> str:
    """Return a principal's heading: where it lives, who owns it, how good the data is."""
    owner = team or "no team"
    tail = " (continued)" if continued else ""
    return (
        f":bust_in_silhouette: `{principal}` ({principal_kind}) in {account}{tail}\n"
        f"Owner: {owner} · data: {data_state} · evidence: {', '.join(sources) or 'none'}"
    )


def row_title(kind: str) -> str:
    """Return a row's label."""
    return f"*{kind_label(kind)}*"


def kind_label(kind: str) -> str:
    """Return a finding kind's label; an unknown kind (from a findings file) shown escaped."""
    return KIND_LABELS.get(kind) or escape(kind)


def row_what(kind: str, service: str | None, actions: list[str], resource: str | None) -> str:
    """Return what exactly would be removed (actions are rendered by the caller)."""
    if kind == "unused_role":
        return "the whole role: nothing used it in the window."
    if kind == "unused_access_key":
        return f"access key `{resource}`"
    if kind == "unused_password":
        return "the console password"
    if actions:
        return f"service `{service}`, {len(actions)} unused action(s): "
    return f"service `{service}`, every granted action"


def approve_all_button(count: int) -> str:
    """Return the label of a principal's approve-all button."""
    return f"Approve all {count}"


def more_actions(count: int) -> str:
    """Return the tail of a cut action list."""
    return f" … and {count} more"


def row_evidence(last_used: str | None, source: str) -> str:
    """Return when it was last used and which source said so."""
    return f"Last used: {last_used or NEVER} · source: {source}"


def row_why(reason: str) -> str:
    """Return why Pare thinks it is unused (already escaped)."""
    return f"Why: _{reason}_"


def outcome(
    kind: str,
    user: str,
    at: datetime,
    until: datetime | None,
    reason: str | None = None,
    revoked: bool = False,
) -> str:
    """Return a decided row's outcome line (reason already escaped)."""
    icon = DECISION_ICONS.get(kind, "")
    verb = DECISION_VERBS.get(kind, kind)
    text = f"{icon} {verb.capitalize()} by {mention(user)} {when(at)}"
    if until is not None:
        text += f"; returns {day(until)}"
    if reason:
        text += f": _{reason}_"
    if revoked:
        text += " (exemption since revoked)"
    return text


def already_decided(kind: str, user: str, at: datetime, until: datetime | None) -> str:
    """Return what a later click is told."""
    verb = DECISION_VERBS.get(kind, kind)
    text = f"{mention(user)} already {verb} this {when(at)}"
    if until is not None:
        text += f" (until {day(until)})"
    return text + ". Nothing more was recorded."


def decided(kind: str) -> str:
    """Return the log-free confirmation for a fresh decision."""
    return f"Recorded: {DECISION_VERBS.get(kind, kind)}."


def refusal(team: str, champions: list[str]) -> str:
    """Return the polite refusal for someone who is not a champion."""
    names = ", ".join(mention(c) for c in champions) or "no champion is configured"
    return (
        f"Only {team}'s champions can decide its findings: {names}. "
        "Nothing was changed; ask one of them, or a Pare admin."
    )


def error_known(detail: str) -> str:
    """Return the message for a known problem."""
    return f":warning: {detail}"


def error_unknown(reference: str) -> str:
    """Return the message for an unexpected failure, with a reference for the operators."""
    return (
        f":warning: Something went wrong on Pare's side. Nothing was changed. "
        f"If it keeps happening, give the Pare operators this reference: `{reference}`."
    )


def item_gone() -> str:
    """Return the message for a button whose row no longer exists."""
    return "That finding is no longer in Pare's records; it may have been re-scanned away."


def button_invalid() -> str:
    """Return the message for a button whose value Pare could not have made."""
    return "That button is no longer valid. Nothing was changed; use the latest digest."


HELP = (
    "*Pare* keeps AWS permissions shrinking, team by team.\n"
    "• `/pare status`: your teams (where you are a champion), open and decided findings\n"
    "• `/pare role NAME`: what Pare found on a role or user of that name, in every account\n"
    "• `/pare help`: this message\n"
    "Digests arrive in each team's channel; champions approve or defer each finding there."
)


def status_none() -> str:
    """Return the status answer for someone who champions no team."""
    return "You are not a champion of any team. `/pare role NAME` works for everyone."


def status_team(team: str, channel: str, open_: int, decided_: dict[str, int]) -> str:
    """Return one team's status line."""
    parts = ", ".join(f"{n} {DECISION_VERBS.get(k, k)}" for k, n in sorted(decided_.items()))
    return f"*{team}* (<#{channel}>): {open_} open finding(s); decided: {parts or 'none yet'}"


def role_none(name: str) -> str:
    """Return the answer when no principal has that name."""
    return f"No role or user called `{name}` in Pare's records."


def role_usage() -> str:
    """Return how to use /pare role."""
    return "Usage: `/pare role NAME`, for example `/pare role deploy-bot`."


def role_principal(name: str, kind: str, account: str, team: str | None, state: str) -> str:
    """Return one principal's heading in a /pare role answer."""
    owner = team or "no team"
    return f"*{name}* ({kind}) in {account}, owned by {owner}; data: {state}"


def role_finding(kind: str, service: str | None, status: str, decision: str | None) -> str:
    """Return one finding's line in a /pare role answer."""
    label = KIND_LABELS.get(kind, kind)
    what = f" `{service}`" if service else ""
    tail = f", {decision}" if decision else ""
    return f"• {label}{what}: {status}{tail}"


def role_more(count: int) -> str:
    """Return the note that a role answer was cut."""
    return f"… and {count} more not shown."


LEADERBOARD_HEADER = "Permission reduction leaderboard"


def leaderboard_line(rank: int, team: str, resolved: int, found: int) -> str:
    """Return one team's leaderboard line."""
    share = f"{round(100 * resolved / found)}%" if found else "n/a"
    return f"{rank}. *{team}*: {share} ({resolved} of {found} unused finding(s) resolved)"


def leaderboard_fallback(teams: int) -> str:
    """Return the leaderboard's short top-level text."""
    return f"Pare leaderboard: {teams} team(s) ranked by reduction progress"


def leaderboard_more(count: int) -> str:
    """Return the note for teams past the top of the board."""
    return f"… and {count} more team(s)."


LEADERBOARD_EXPLAIN = (
    "Resolved means approved for removal or no longer unused; deferred and open findings count "
    "as not yet resolved."
)


# -- modals -----------------------------------------------------------------------------------

DEFER_TITLE = "Defer a finding"
EXEMPT_TITLE = "Exempt a finding"
SUBMIT_DEFER = "Defer"
SUBMIT_EXEMPT = "Exempt"
CANCEL = "Cancel"
PERIOD_LABEL = "Hide it for"
REASON_LABEL = "Reason"
DEFER_REASON_HINT = "Optional: why not now (a migration in flight, a quarterly job…)"
EXEMPT_REASON_HINT = "Required: why this access must stay (seen by auditors and the team)"
DEFER_PERIODS = (7, 14, 30, 90)


def period_option(days: int) -> str:
    """Return a deferral period's label."""
    return f"{days} days"


def modal_subject(what: str) -> str:
    """Return the line at the top of a modal naming the finding (already escaped)."""
    return f"You are deciding on: {what}"


def approved_all(count: int) -> str:
    """Return the confirmation for an approve-all that decided nothing new."""
    return f"Nothing left to approve for that principal; {count} already decided."


# -- App Home ---------------------------------------------------------------------------------

HOME_HEADER = "Pare"
HOME_NO_TEAMS = "You are not a champion of any team. `/pare role NAME` works for everyone."
HOME_NO_EXEMPTIONS = "No standing exemptions on your teams."
HOME_EXEMPTIONS = "*Standing exemptions* (they stay until revoked)"
REVOKE_BUTTON = "Revoke"


def home_team(team: str, channel: str, open_: int) -> str:
    """Return one team's line in the App Home."""
    return f"*{team}* (<#{channel}>): {open_} open finding(s)"


def home_exemption(
    what: str, principal: str, team: str, user: str, at: datetime, reason: str
) -> str:
    """Return one exemption's line in the App Home (texts already escaped)."""
    return f"`{principal}`: {what} ({team}), exempted by {mention(user)} {day(at)}: _{reason}_"


def home_more(count: int) -> str:
    """Return the note that the App Home list was cut."""
    return f"… and {count} more; ask a Pare admin for the full list."


def revoked(user: str) -> str:
    """Return the confirmation of a revoked exemption."""
    return f"Exemption revoked by {mention(user)}; the finding returns in the next digest."


def already_revoked(user: str, at: datetime) -> str:
    """Return what a later revoke click is told."""
    return f"{mention(user)} already revoked this exemption {when(at)}. Nothing more was recorded."


# -- escalation -------------------------------------------------------------------------------

ESCALATION_HEADER = "Teams that need a nudge"


def escalation_fallback(teams: int) -> str:
    """Return the escalation message's short top-level text."""
    return f"Pare: {teams} team(s) need attention"


def escalation_waiting(team: str, channel: str, count: int, days: int) -> str:
    """Return the line for a team whose findings have waited too long."""
    return (
        f"*{team}* (<#{channel}>): {count} finding(s) waiting longer than {days} days "
        "for a decision"
    )


def escalation_champions(team: str, channel: str, gone: list[str], left: int) -> str:
    """Return the line for a team whose champions have left the workspace."""
    who = ", ".join(f"`{g}`" for g in gone)
    tail = "no champion is left" if left == 0 else f"{left} champion(s) remain"
    return (
        f"*{team}* (<#{channel}>): champion(s) {who} no longer in the workspace; {tail}. "
        "Update the teams file."
    )


ESCALATION_EXPLAIN = "Posted by Pare's daily check; each team appears at most once a day."
