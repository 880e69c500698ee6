"""payments database: an index for the sweeper's look at orders still pending past their expiry

Revision ID: p0008
Revises: p0007
"""

from db.migrations.sql import execute_all

revision = "p0008"
down_revision = "p0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        -- Orders the API recorded whose saga never started (the start failed and the client never retried):
        -- the sweeper finds them by expiry among the few still pending, never by scanning every order.
        CREATE INDEX orders_pending_expiry_idx ON orders (expires_at) WHERE status = 'pending';
        """
    )


def downgrade() -> None:
    execute_all("DROP INDEX orders_pending_expiry_idx;")
