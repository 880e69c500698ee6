"""payments database: reconciliation mismatches (gateway vs payments DB vs ledger)

Revision ID: p0006
Revises: p0005
"""

from db.migrations.sql import execute_all

revision = "p0006"
down_revision = "p0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        -- One row per mismatch a reconciliation run found; a retried run adds nothing (UNIQUE per run).
        -- resolved_at / resolution are for the operator who settles it (docs/sagas.md runbook).
        CREATE TABLE reconciliation_mismatches (
            id           bigserial PRIMARY KEY,
            run_id       text NOT NULL,
            kind         text NOT NULL,
            payment_id   text NOT NULL,
            subject      text NOT NULL DEFAULT '',
            expected     text NOT NULL,
            actual       text NOT NULL,
            detected_at  timestamptz NOT NULL DEFAULT now(),
            resolved_at  timestamptz,
            resolution   text,
            CONSTRAINT reconciliation_mismatches_run_key UNIQUE (run_id, kind, payment_id, subject)
        );
        CREATE INDEX reconciliation_mismatches_payment_idx ON reconciliation_mismatches (payment_id);
        CREATE INDEX reconciliation_mismatches_open_idx ON reconciliation_mismatches (detected_at)
            WHERE resolved_at IS NULL;
        """
    )


def downgrade() -> None:
    execute_all("DROP TABLE reconciliation_mismatches;")
