"""payments database: notifications (domain events for users and merchants)

Revision ID: p0004
Revises: p0003
"""

from db.migrations.sql import execute_all

revision = "p0004"
down_revision = "p0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        CREATE TABLE notifications (
            id               bigserial PRIMARY KEY,
            idempotency_key  text NOT NULL,
            recipient        text NOT NULL,
            kind             text NOT NULL,
            data             jsonb NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            delivered_at     timestamptz,
            delivery_error   text,
            CONSTRAINT notifications_idempotency_key_key UNIQUE (idempotency_key)
        );
        CREATE INDEX notifications_recipient_idx ON notifications (recipient, id);
        """
    )


def downgrade() -> None:
    execute_all("DROP TABLE notifications;")
