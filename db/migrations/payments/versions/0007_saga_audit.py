"""payments database: saga_audit — compensations that gave up and the operators' decisions about them

Revision ID: p0007
Revises: p0006
"""

from db.migrations.sql import execute_all

revision = "p0007"
down_revision = "p0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        -- One row per event of the compensation-failure queue (docs/sagas.md, "A failed compensation"): the saga
        -- asking for attention (operator 'payweave', what failed), an operator's retry or resolve (with the
        -- reason), an operator's cancellation. Keyed: a retried activity writes its row once. Never updated.
        CREATE TABLE saga_audit (
            id               bigserial PRIMARY KEY,
            idempotency_key  text NOT NULL,
            saga_id          text NOT NULL,
            saga_kind        text NOT NULL,
            action           text NOT NULL,
            operator         text NOT NULL,
            compensation     text,
            failure          text,
            reason           text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT saga_audit_key UNIQUE (idempotency_key),
            CONSTRAINT saga_audit_action CHECK (action IN ('needs_attention', 'retry', 'resolve', 'cancel')),
            CONSTRAINT saga_audit_operator CHECK (btrim(operator) <> ''),
            -- An operator who resolves by hand says why; the saga's own row says what failed.
            CONSTRAINT saga_audit_resolve_reason CHECK (action <> 'resolve' OR btrim(coalesce(reason, '')) <> ''),
            CONSTRAINT saga_audit_failure CHECK (action <> 'needs_attention' OR failure IS NOT NULL)
        );
        CREATE INDEX saga_audit_saga_idx ON saga_audit (saga_id, id);
        """
    )


def downgrade() -> None:
    execute_all("DROP TABLE saga_audit;")
