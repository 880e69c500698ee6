"""wallet database: journals.external_ref — the payments-DB payment a gateway-related journal is about

Revision ID: w0002
Revises: w0001

The reconciliation (and ``payweave ledger verify`` I5) matches every captured gateway payment with its clearing
entries by this column. Journals posted before it existed carry NULL; the checks fall back to the saga id for them.
"""

from db.migrations.sql import execute_all

revision = "w0002"
down_revision = "w0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        ALTER TABLE journals ADD COLUMN external_ref text;
        CREATE INDEX journals_external_ref_idx ON journals (external_ref) WHERE external_ref IS NOT NULL;
        """
    )


def downgrade() -> None:
    execute_all("DROP INDEX journals_external_ref_idx; ALTER TABLE journals DROP COLUMN external_ref;")
