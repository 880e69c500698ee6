"""payments database: idempotency keys, payments (deposits), transfers, webhook events

Revision ID: p0001
Revises:
"""

from db.migrations.sql import execute_all

revision = "p0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        -- Idempotency-Key → workflow id, with the hash of the first request body (409 on reuse, R9).
        CREATE TABLE idempotency_keys (
            workflow_id   text PRIMARY KEY,
            request_hash  text NOT NULL,
            resource_id   text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX idempotency_keys_resource_id_idx ON idempotency_keys (resource_id);

        CREATE TABLE payments (
            id                  text PRIMARY KEY,
            idempotency_key     text NOT NULL,
            workflow_id         text NOT NULL,
            purpose             text NOT NULL CHECK (purpose IN ('deposit', 'checkout', 'group_buy')),
            owner               text NOT NULL,
            wallet_id           text,
            gateway             text NOT NULL CHECK (gateway IN ('stripe', 'xendit')),
            gateway_payment_id  text,
            amount              bigint NOT NULL CHECK (amount > 0),
            currency            char(3) NOT NULL,
            status              text NOT NULL DEFAULT 'pending' CHECK (status IN
                                ('pending', 'awaiting_payment', 'succeeded', 'failed', 'expired', 'canceled',
                                 'refunded')),
            failure_code        text,
            credited            boolean NOT NULL DEFAULT false,
            next_action         jsonb,
            expires_at          timestamptz,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT payments_idempotency_key_key UNIQUE (idempotency_key),
            CONSTRAINT payments_gateway_object_key UNIQUE (gateway, gateway_payment_id)
        );
        CREATE INDEX payments_owner_idx ON payments (owner, created_at);
        CREATE INDEX payments_pending_expiry_idx ON payments (expires_at)
            WHERE status IN ('pending', 'awaiting_payment');

        CREATE TABLE transfers (
            id              text PRIMARY KEY,
            workflow_id     text NOT NULL,
            owner           text NOT NULL,
            from_wallet_id  text NOT NULL,
            to_wallet_id    text NOT NULL,
            amount          bigint NOT NULL CHECK (amount > 0),
            currency        char(3) NOT NULL,
            description     text,
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'debited', 'completed', 'failed')),
            failure_code    text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT transfers_workflow_id_key UNIQUE (workflow_id)
        );
        CREATE INDEX transfers_owner_idx ON transfers (owner, created_at);

        CREATE TABLE webhook_events (
            id           bigserial PRIMARY KEY,
            provider     text NOT NULL,
            event_id     text NOT NULL,
            event_type   text NOT NULL,
            object_id    text,
            workflow_id  text,
            payload      jsonb NOT NULL,
            received_at  timestamptz NOT NULL DEFAULT now(),
            routed_at    timestamptz,
            route_error  text,
            CONSTRAINT webhook_events_provider_event_id_key UNIQUE (provider, event_id)
        );
        CREATE INDEX webhook_events_unrouted_idx ON webhook_events (received_at) WHERE routed_at IS NULL;
        """
    )


def downgrade() -> None:
    execute_all(
        "DROP TABLE webhook_events; DROP TABLE transfers; DROP TABLE payments; DROP TABLE idempotency_keys;"
    )
