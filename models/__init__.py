"""Pare's tables, as SQLAlchemy 2 typed models.

Decisions and changes are append-only: rows are inserted, never updated or deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Team(Base):
    """A team as configured; rows follow the teams file on every sync."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    digest_day: Mapped[str] = mapped_column(String(16), default="monday")
    digest_hour: Mapped[int] = mapped_column(Integer, default=9)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    champions: Mapped[list[Champion]] = relationship(
        back_populates="team", cascade="all, delete-orphan", order_by="Champion.id"
    )


class Champion(Base):
    """A Slack user who may decide a team's findings."""

    __tablename__ = "champions"
    __table_args__ = (UniqueConstraint("team_id", "slack_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    slack_user_id: Mapped[str] = mapped_column(String(32))

    team: Mapped[Team] = relationship(back_populates="champions")


class Account(Base):
    """An AWS account Pare reads."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    apply_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    last_scan_at: Mapped[datetime | None]
    last_scan_status: Mapped[str | None] = mapped_column(String(32))
    last_scan_error: Mapped[str | None] = mapped_column(Text)


class Principal(Base):
    """An IAM role or user in one account, as of the latest scan."""

    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    arn: Mapped[str] = mapped_column(String(2048), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # role | user
    name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(512), default="/")
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), index=True)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # complete | too_new | incomplete | unreadable | stale | excluded
    data_state: Mapped[str] = mapped_column(String(16), default="complete")
    data_reason: Mapped[str | None] = mapped_column(Text)
    granted: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    gone_at: Mapped[datetime | None]

    account: Mapped[Account] = relationship()
    team: Mapped[Team | None] = relationship()
    findings: Mapped[list[Finding]] = relationship(back_populates="principal")


class Finding(Base):
    """One thing that looks unused (or is kept as unknown or too new) on one principal.

    `key` makes a finding stable across scans: the same unused service of the same principal is
    the same row, updated in place.
    """

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("principal_id", "key"),
        Index("ix_findings_open", "closed_at", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    key: Mapped[str] = mapped_column(String(300))
    # unused_role | unused_access_key | unused_password | unused_permission
    kind: Mapped[str] = mapped_column(String(24))
    # unused | unknown | too_new | excluded
    status: Mapped[str] = mapped_column(String(12))
    service: Mapped[str | None] = mapped_column(String(64))
    actions: Mapped[list[Any] | None] = mapped_column(JSON)
    resource_id: Mapped[str | None] = mapped_column(String(128))  # access key id
    reason: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(32))
    evidence_read_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bumped when a deferral ends, so the finding can be decided afresh.
    round: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(String(64))

    principal: Mapped[Principal] = relationship(back_populates="findings")
    decisions: Mapped[list[Decision]] = relationship(
        back_populates="finding", order_by="Decision.id"
    )


class Scan(Base):
    """One scan of one account."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Digest(Base):
    """One team's digest for one period; delivered once."""

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("team_id", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    period: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    # pending | posting | posted | empty | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    posted_at: Mapped[datetime | None]
    # The head's counts frozen when planned, so edits after a decision do not change them.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Who is posting it, until when: two processes never post the same digest at once.
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]

    team: Mapped[Team] = relationship()
    messages: Mapped[list[DigestMessage]] = relationship(
        back_populates="digest", order_by="DigestMessage.part"
    )


class DigestMessage(Base):
    """One posted Slack message of a digest; its channel and ts let us edit it later."""

    __tablename__ = "digest_messages"
    __table_args__ = (UniqueConstraint("digest_id", "part"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id"), index=True)
    part: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    posted_at: Mapped[datetime | None]

    digest: Mapped[Digest] = relationship(back_populates="messages")
    items: Mapped[list[DigestItem]] = relationship(
        back_populates="message", order_by="DigestItem.id"
    )


class DigestItem(Base):
    """A finding as shown in one digest message; its id is the value of that row's buttons."""

    __tablename__ = "digest_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("digest_messages.id"), index=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    # What was shown, frozen: the approved set is exactly this.
    shown: Mapped[dict[str, Any]] = mapped_column(default=dict)

    message: Mapped[DigestMessage] = relationship(back_populates="items")
    finding: Mapped[Finding] = relationship()


class Decision(Base):
    """A champion's approve, defer or exempt of one finding in one round; kept forever."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("finding_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    digest_item_id: Mapped[int | None] = mapped_column(ForeignKey("digest_items.id"))
    # approve | defer | exempt
    kind: Mapped[str] = mapped_column(String(8))
    decided_by: Mapped[str] = mapped_column(String(32))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    defer_until: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    # The exact set approved (kind, service, actions, key id), frozen at decision time.
    frozen: Mapped[dict[str, Any]] = mapped_column(default=dict)

    finding: Mapped[Finding] = relationship(back_populates="decisions")


class JobRun(Base):
    """One run of a scheduled job for one key (team and period); makes jobs idempotent."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "run_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    run_key: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)


class SchedulerLease(Base):
    """Who holds the scheduler's leadership, and until when."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    fencing: Mapped[int] = mapped_column(BigInteger, default=0)


class Change(Base):
    """One removal (or an undo of one), a durable state machine with its before-state.

    status: planned -> before_state_saved -> applying (step k of n) -> applied | refused |
    failed | rolling_back -> rolled_back; a dry run is recorded as `dry_run`, and a change whose
    whole approved set was used since as `dropped`. The before-state is written once and never
    changed; an undo is a new row (kind `undo`) pointing at the change it undoes.
    """

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_status", "status", "mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), index=True)
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("findings.id"), index=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    # An undo's change, or the deactivation a grace-period deletion follows.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("changes.id"), index=True)
    # trim_permissions | deactivate_access_key | delete_access_key | delete_login_profile |
    # quarantine_role | delete_role | undo
    kind: Mapped[str] = mapped_column(String(32))
    # dry_run | commit
    mode: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), default="planned")
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    # Actions (or the key id, the role) this change takes away, and what it left and why.
    removed: Mapped[list[Any]] = mapped_column(default=list)
    kept: Mapped[list[Any]] = mapped_column(default=list)
    # For an undo: the actions to restore (empty: everything).
    only: Mapped[list[Any]] = mapped_column(default=list)
    requested_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    before_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    slack_channel: Mapped[str | None] = mapped_column(String(32))
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    # How many undos of this change were recorded. An undo claims the next number with a
    # conditional UPDATE in the transaction that records it, so two undos asked for at the same
    # moment cannot both go ahead, on PostgreSQL or SQLite.
    undo_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    principal: Mapped[Principal] = relationship()
    decision: Mapped[Decision | None] = relationship()
    step_rows: Mapped[list[ChangeStep]] = relationship(
        back_populates="change", order_by="ChangeStep.number"
    )
    events: Mapped[list[ChangeEvent]] = relationship(
        back_populates="change", order_by="ChangeEvent.id"
    )


class ChangeStep(Base):
    """One AWS call of a change, planned in full before the first is made."""

    __tablename__ = "change_steps"
    __table_args__ = (UniqueConstraint("change_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("changes.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pending | done | rolled_back
    status: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    done_at: Mapped[datetime | None]

    change: Mapped[Change] = relationship(back_populates="step_rows")


class ChangeEvent(Base):
    """One transition of a change; appended, never updated, so history is never lost."""

    __tablename__ = "change_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("changes.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(20))
    step: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)

    change: Mapped[Change] = relationship(back_populates="events")


class Revocation(Base):
    """The end of an exemption: who revoked it, when and why; the decision itself stays."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), unique=True)
    revoked_by: Mapped[str] = mapped_column(String(32))
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)

    decision: Mapped[Decision] = relationship()


class SlackInstall(Base):
    """Whether Pare may post to a Slack workspace (uninstalled or revoked tokens pause it)."""

    __tablename__ = "slack_installs"

    workspace: Mapped[str] = mapped_column(String(32), primary_key=True)
    # active | uninstalled | tokens_revoked
    state: Mapped[str] = mapped_column(String(16), default="active")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
