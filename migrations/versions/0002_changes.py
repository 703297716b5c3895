"""changes: removals and undos, their steps and their append-only events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("finding_id", sa.Integer(), nullable=True),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("removed", sa.JSON(), nullable=False),
        sa.Column("kept", sa.JSON(), nullable=False),
        sa.Column("only", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("before_state", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("slack_channel", sa.String(length=32), nullable=True),
        sa.Column("slack_ts", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_changes_decision_id_decisions")
        ),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["findings.id"], name=op.f("fk_changes_finding_id_findings")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["changes.id"], name=op.f("fk_changes_parent_id_changes")
        ),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name=op.f("fk_changes_principal_id_principals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_changes")),
    )
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.create_index("ix_changes_status", ["status", "mode"], unique=False)
        batch_op.create_index(batch_op.f("ix_changes_decision_id"), ["decision_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_changes_finding_id"), ["finding_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_changes_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_changes_principal_id"), ["principal_id"], unique=False)

    op.create_table(
        "change_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(length=40), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["change_id"], ["changes.id"], name=op.f("fk_change_steps_change_id_changes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_steps")),
        sa.UniqueConstraint("change_id", "number", name=op.f("uq_change_steps_change_id")),
    )
    with op.batch_alter_table("change_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_steps_change_id"), ["change_id"], unique=False)

    op.create_table(
        "change_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["change_id"], ["changes.id"], name=op.f("fk_change_events_change_id_changes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_events")),
    )
    with op.batch_alter_table("change_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_events_change_id"), ["change_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("change_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_events_change_id"))
    op.drop_table("change_events")

    with op.batch_alter_table("change_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_steps_change_id"))
    op.drop_table("change_steps")

    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_changes_principal_id"))
        batch_op.drop_index(batch_op.f("ix_changes_parent_id"))
        batch_op.drop_index(batch_op.f("ix_changes_finding_id"))
        batch_op.drop_index(batch_op.f("ix_changes_decision_id"))
        batch_op.drop_index("ix_changes_status")
    op.drop_table("changes")
