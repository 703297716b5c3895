"""undo claim: a counter on each change that an undo claims with a conditional UPDATE

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows start at 0: the claim compares against the value it read, not a count of
    # undos, so older changes need no data migration.
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("undo_seq", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_column("undo_seq")
