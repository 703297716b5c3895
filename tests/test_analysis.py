"""The evidence rules: unused must be proven, everything else is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.analysis import analyze_principal, granted_actions
from bot.catalog import catalogue
from bot.domain import AccessKey, LoginProfile, Policy, PrincipalRecord, UsageEvidence
from bot.teams import Exclusions

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
LONG_AGO = AS_OF - timedelta(days=400)
RECENT = AS_OF - timedelta(days=5)


def role(name: str = "app", statements: list[dict] | None = None, **kw) -> PrincipalRecord:
    doc = {"Version": "2012-10-17", "Statement": statements or []}
    defaults = dict(
        account_id="111122223333",
        arn=f"arn:aws:iam::111122223333:role{kw.get('path', '/')}{name}",
        kind="role",
        name=name,
        created_at=LONG_AGO,
        last_used_at=RECENT,
        policies=[Policy(name="inline", document=doc, origin="inline")],
    )
    defaults.update(kw)
    return PrincipalRecord(**defaults)


def trail(actions: dict[str, datetime] | None = None, **kw) -> UsageEvidence:
    actions = actions or {}
    services: dict[str, datetime] = {}
    for action, seen in actions.items():
        prefix = action.partition(":")[0]
        services[prefix] = max(seen, services.get(prefix, seen))
    defaults = dict(
        source="cloudtrail",
        covered_from=AS_OF - timedelta(days=200),
        covered_to=AS_OF,
        read_at=AS_OF,
        services=services,
        actions={k.lower(): v for k, v in actions.items()},
    )
    defaults.update(kw)
    return UsageEvidence(**defaults)


def judge(principal: PrincipalRecord, evidence: list[UsageEvidence], **kw):
    return analyze_principal(
        principal, evidence, as_of=AS_OF, window_days=90, exclusions=Exclusions(), **kw
    )


def by_status(result, status: str) -> dict[str | None, list[str] | None]:
    return {f.service: f.actions for f in result.findings if f.status == status}


ALLOW = "Allow"


def test_unused_service_is_offered_whole_and_used_actions_are_kept():
    principal = role(
        statements=[
            {"Effect": ALLOW, "Action": ["s3:ListAllMyBuckets", "s3:ListBucket"], "Resource": "*"},
            {"Effect": ALLOW, "Action": "dynamodb:DescribeTable", "Resource": "*"},
        ]
    )
    result = judge(principal, [trail({"s3:ListAllMyBuckets": RECENT})])

    unused = by_status(result, "unused")
    assert result.data_state == "complete"
    assert unused == {"dynamodb": None, "s3": ["s3:ListBucket"]}


def test_unused_role_is_offered_whole_without_per_service_findings():
    principal = role(
        statements=[{"Effect": ALLOW, "Action": "ec2:*", "Resource": "*"}],
        last_used_at=AS_OF - timedelta(days=120),
    )
    result = judge(principal, [trail()])

    assert [(f.kind, f.status) for f in result.findings] == [("unused_role", "unused")]
    assert "last used 2026-08-03" in result.findings[0].reason


def test_pass_role_and_unlogged_data_events_are_unknown_never_unused():
    principal = role(
        statements=[
            {"Effect": ALLOW, "Action": ["iam:PassRole", "iam:GetRole"], "Resource": "*"},
            {"Effect": ALLOW, "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"},
        ]
    )
    result = judge(principal, [trail({"s3:ListBucket": RECENT})])

    unknown = by_status(result, "unknown")
    assert unknown["iam"] == ["iam:PassRole"]
    assert unknown["s3"] == ["s3:GetObject"]
    assert by_status(result, "unused") == {"iam": ["iam:GetRole"]}


def test_data_events_count_when_the_trail_logs_them():
    principal = role(statements=[{"Effect": ALLOW, "Action": "s3:GetObject", "Resource": "*"}])
    result = judge(principal, [trail({"s3:ListBucket": RECENT}, data_events=True)])

    assert by_status(result, "unused") == {"s3": ["s3:GetObject"]}


def test_deny_statements_and_boundaries_are_never_unused():
    principal = role(
        statements=[{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}],
        boundary_arn="arn:aws:iam::aws:policy/PowerUserAccess",
    )
    result = judge(principal, [trail()])

    assert result.findings == []


def test_not_action_allow_is_expanded_against_the_whole_catalogue():
    principal = role(
        statements=[{"Effect": ALLOW, "NotAction": ["iam:*", "organizations:*"], "Resource": "*"}]
    )
    grants = granted_actions(principal.policies, catalogue())

    services = {g.action.partition(":")[0] for g in grants.values()}
    assert "iam" not in services and "organizations" not in services
    assert {"s3", "ec2", "lambda"} <= services
    assert len(services) > 400


def test_a_trail_that_does_not_cover_the_window_proves_nothing():
    principal = role(statements=[{"Effect": ALLOW, "Action": "sqs:ListQueues", "Resource": "*"}])
    short = trail(covered_from=AS_OF - timedelta(days=30))
    result = judge(principal, [short])

    assert by_status(result, "unused") == {}
    assert by_status(result, "unknown") == {"sqs": ["sqs:ListQueues"]}
    assert "does not cover" in result.findings[0].reason


def test_no_evidence_at_all_keeps_everything_unknown():
    principal = role(statements=[{"Effect": ALLOW, "Action": "sqs:ListQueues", "Resource": "*"}])
    result = judge(principal, [])

    assert [f.status for f in result.findings] == ["unknown"]


def test_unmappable_events_keep_every_action_of_their_service():
    principal = role(
        statements=[{"Effect": ALLOW, "Action": ["ec2:DescribeVpcs", "ec2:RunInstances"]}]
    )
    evidence = trail({"ec2:DescribeVpcs": RECENT}, action_gaps={"ec2"})
    result = judge(principal, [evidence])

    assert by_status(result, "unused") == {}


def test_service_level_source_alone_cannot_prove_single_actions_unused():
    principal = role(
        statements=[{"Effect": ALLOW, "Action": ["ec2:DescribeVpcs", "ec2:RunInstances"]}]
    )
    advisor = trail(source="access_advisor", action_level=False)
    advisor.services = {"ec2": RECENT}
    result = judge(principal, [advisor])

    assert by_status(result, "unused") == {}


def test_young_principals_and_young_attachments_are_too_new():
    young = role(created_at=AS_OF - timedelta(days=10))
    assert judge(young, [trail()]).data_state == "too_new"

    recent_policy = Policy(
        name="new",
        document={"Statement": [{"Effect": ALLOW, "Action": "sns:ListTopics"}]},
        origin="managed",
        attached_at=AS_OF - timedelta(days=3),
    )
    principal = role(policies=[recent_policy])
    result = judge(principal, [trail()])
    assert by_status(result, "too_new") == {"sns": ["sns:ListTopics"]}
    assert by_status(result, "unused") == {}


def test_aws_owned_and_exempt_principals_are_excluded():
    linked = role("AWSServiceRoleForSupport", path="/aws-service-role/support.amazonaws.com/")
    sso = role("AWSReservedSSO_Admin_0123", path="/aws-reserved/sso.amazonaws.com/")
    tower = role("AWSControlTowerExecution")
    tagged = role("legacy", tags={"pare:exempt": "migrating"})

    for principal in (linked, sso, tower, tagged):
        result = judge(principal, [trail()])
        assert result.data_state == "excluded", principal.name
        assert [f.status for f in result.findings] == ["excluded"]


def test_read_problems_fail_closed():
    principal = role(
        statements=[{"Effect": ALLOW, "Action": "sqs:ListQueues"}],
        read_problems=["ListAttachedRolePolicies: Throttling"],
    )
    result = judge(principal, [trail()])

    assert result.data_state == "unreadable"
    assert all(f.status != "unused" for f in result.findings)


def test_source_problems_downgrade_every_finding_to_unknown():
    principal = role(statements=[{"Effect": ALLOW, "Action": "sqs:ListQueues"}])
    result = judge(principal, [trail(problems=["2 log files could not be read"])])

    assert result.data_state == "incomplete"
    assert by_status(result, "unused") == {}
    assert by_status(result, "unknown") == {"sqs": None}


def test_keys_and_passwords():
    user = PrincipalRecord(
        account_id="111122223333",
        arn="arn:aws:iam::111122223333:user/ci",
        kind="user",
        name="ci",
        created_at=LONG_AGO,
        access_keys=[
            AccessKey("AKIAOLDUNUSED1", "Active", LONG_AGO, AS_OF - timedelta(days=100)),
            AccessKey("AKIAOLDUSED2", "Active", LONG_AGO, RECENT),
            AccessKey("AKIANEW3", "Active", RECENT, None),
            AccessKey("AKIAINACTIVE4", "Inactive", LONG_AGO, None),
        ],
        login_profile=LoginProfile(created_at=LONG_AGO, last_used_at=None),
    )
    result = judge(user, [trail()])

    kinds = {(f.kind, f.resource_id, f.status) for f in result.findings}
    assert ("unused_access_key", "AKIAOLDUNUSED1", "unused") in kinds
    assert ("unused_access_key", "AKIANEW3", "too_new") in kinds
    assert ("unused_password", None, "unused") in kinds
    assert not any(r == "AKIAOLDUSED2" for _, r, _ in kinds)
    assert not any(r == "AKIAINACTIVE4" for _, r, _ in kinds)


# -- properties ---------------------------------------------------------------------------

CAT = catalogue()
SERVICES = ["s3", "ec2", "iam", "lambda", "sqs", "dynamodb", "kms", "sns"]


@st.composite
def patterns(draw) -> str:
    service = draw(st.sampled_from(SERVICES))
    name = draw(st.sampled_from(CAT.actions(service))).partition(":")[2]
    cut = draw(st.integers(min_value=0, max_value=len(name)))
    return f"{service}:{name[:cut]}*" if draw(st.booleans()) else f"{service}:{name}"


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=6))
def test_expansion_matches_each_pattern_and_nothing_else(pats):
    expanded = CAT.expand_all(pats)

    for action in expanded:
        service, _, name = action.partition(":")
        assert any(
            p.partition(":")[0] == service
            and (
                name.lower().startswith(p.partition(":")[2].rstrip("*").lower())
                if p.endswith("*")
                else name.lower() == p.partition(":")[2].lower()
            )
            for p in pats
        )
    for p in pats:
        if not p.endswith("*"):
            assert CAT.canonical(p) in expanded


@settings(max_examples=150, deadline=None)
@given(
    granted=st.lists(st.sampled_from(CAT.actions("sqs")), min_size=1, max_size=12, unique=True),
    used_share=st.floats(min_value=0, max_value=1),
    days_ago=st.integers(min_value=0, max_value=300),
)
def test_nothing_seen_inside_the_window_is_ever_called_unused(granted, used_share, days_ago):
    used = granted[: int(len(granted) * used_share)]
    seen = AS_OF - timedelta(days=days_ago)
    principal = role(statements=[{"Effect": ALLOW, "Action": granted, "Resource": "*"}])
    result = judge(principal, [trail({a: seen for a in used})])

    offered = set()
    for finding in result.findings:
        if finding.status == "unused":
            offered |= set(finding.actions or granted)
    if days_ago < 90:
        assert not offered & set(used)
        assert offered <= set(granted)
    if not used or days_ago > 90:
        # Nothing used inside the window: the whole grant is offered.
        assert offered >= set(granted) - {a for a in granted if CAT.is_data_event(a)}


@settings(max_examples=100, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=4))
def test_not_action_grants_exactly_what_its_patterns_leave_out(pats):
    left = CAT.expand_not_action(pats)
    named = CAT.expand_all(pats)
    everything = CAT.expand("*")

    assert not left & named
    assert left | named == everything
    # Naming more in NotAction can only grant less.
    assert CAT.expand_not_action([*pats, "s3:*"]) <= left


@settings(max_examples=12, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=4), st.sampled_from(["Deny", ALLOW]))
def test_a_not_action_allow_is_never_offered_for_what_it_leaves_out(pats, effect):
    principal = role(statements=[{"Effect": effect, "NotAction": pats, "Resource": "*"}])
    result = judge(principal, [trail()])

    offered = {a.lower() for f in result.findings if f.actions for a in f.actions}
    assert not offered & {a.lower() for a in CAT.expand_all(pats)}
    if effect == "Deny":
        assert result.findings == []


def test_use_seen_by_a_source_that_does_not_cover_the_window_still_counts():
    principal = role(statements=[{"Effect": ALLOW, "Action": ["ec2:DescribeVpcs"]}])
    # Access Advisor covers the window and saw nothing; a short trail saw the call.
    advisor = trail(source="access_advisor", action_level=False)
    short = trail({"ec2:DescribeVpcs": RECENT}, covered_from=AS_OF - timedelta(days=20))
    result = judge(principal, [advisor, short])

    assert by_status(result, "unused") == {}
