"""payments database: refunds, refunded amounts per tender

Revision ID: p0003
Revises: p0002
"""

from db.migrations.sql import execute_all

revision = "p0003"
down_revision = "p0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        ALTER TABLE orders ADD COLUMN refunded_wallet bigint NOT NULL DEFAULT 0;
        ALTER TABLE orders ADD COLUMN refunded_gateway bigint NOT NULL DEFAULT 0;
        -- Per tender, refunds never exceed what that tender paid; together they make refunded_amount.
        ALTER TABLE orders ADD CONSTRAINT orders_refunds_per_tender CHECK (
            refunded_wallet BETWEEN 0 AND wallet_amount AND refunded_gateway BETWEEN 0 AND gateway_amount
            AND refunded_wallet + refunded_gateway = refunded_amount);

        CREATE TABLE refunds (
            id                 text PRIMARY KEY,
            workflow_id        text NOT NULL,
            order_id           text NOT NULL REFERENCES orders (id),
            requester          text NOT NULL,
            amount             bigint NOT NULL CHECK (amount > 0),
            wallet_amount      bigint NOT NULL CHECK (wallet_amount >= 0),
            gateway_amount     bigint NOT NULL CHECK (gateway_amount >= 0),
            policy             text NOT NULL CHECK (policy IN ('proportional', 'wallet_first', 'gateway_first')),
            reason             text NOT NULL,
            status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
            failure_code       text,
            gateway_refund_id  text,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT refunds_workflow_id_key UNIQUE (workflow_id),
            CONSTRAINT refunds_tenders_sum CHECK (wallet_amount + gateway_amount = amount)
        );
        CREATE INDEX refunds_order_idx ON refunds (order_id);
        """
    )


def downgrade() -> None:
    execute_all(
        """
        DROP TABLE refunds;
        ALTER TABLE orders DROP CONSTRAINT orders_refunds_per_tender;
        ALTER TABLE orders DROP COLUMN refunded_gateway;
        ALTER TABLE orders DROP COLUMN refunded_wallet;
        """
    )
