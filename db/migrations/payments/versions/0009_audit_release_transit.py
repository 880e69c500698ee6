"""payments database: saga_audit records an operator's release of money a finished saga left in transit

Revision ID: p0009
Revises: p0008
"""

from db.migrations.sql import execute_all

revision = "p0009"
down_revision = "p0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        -- `payweave ledger release-transit`: a saga whose reversal was resolved by hand left money in transit;
        -- the operator moves it to a wallet with a journal carrying the saga's id, and says why.
        ALTER TABLE saga_audit DROP CONSTRAINT saga_audit_action;
        ALTER TABLE saga_audit ADD CONSTRAINT saga_audit_action
            CHECK (action IN ('needs_attention', 'retry', 'resolve', 'cancel', 'release_transit'));
        ALTER TABLE saga_audit ADD CONSTRAINT saga_audit_release_reason
            CHECK (action <> 'release_transit' OR btrim(coalesce(reason, '')) <> '');
        """
    )


def downgrade() -> None:
    execute_all(
        """
        ALTER TABLE saga_audit DROP CONSTRAINT saga_audit_release_reason;
        DELETE FROM saga_audit WHERE action = 'release_transit';
        ALTER TABLE saga_audit DROP CONSTRAINT saga_audit_action;
        ALTER TABLE saga_audit ADD CONSTRAINT saga_audit_action
            CHECK (action IN ('needs_attention', 'retry', 'resolve', 'cancel'));
        """
    )
