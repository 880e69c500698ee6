"""payments database: products with stock, stock reservations, orders

Revision ID: p0002
Revises: p0001
"""

from db.migrations.sql import execute_all

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        CREATE TABLE products (
            id          text PRIMARY KEY,
            merchant    text NOT NULL,
            name        text NOT NULL,
            price       bigint NOT NULL CHECK (price > 0),
            currency    char(3) NOT NULL,
            stock       integer NOT NULL CHECK (stock >= 0),
            -- Units held by checkouts that have not finished yet: never more than the stock (no overselling).
            reserved    integer NOT NULL DEFAULT 0,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT products_reserved_within_stock CHECK (reserved >= 0 AND reserved <= stock)
        );
        CREATE INDEX products_merchant_idx ON products (merchant, created_at);

        CREATE TABLE stock_reservations (
            id               text PRIMARY KEY,
            idempotency_key  text NOT NULL,
            product_id       text NOT NULL REFERENCES products (id),
            order_id         text NOT NULL,
            quantity         integer NOT NULL CHECK (quantity > 0),
            status           text NOT NULL DEFAULT 'reserved' CHECK (status IN ('reserved', 'committed', 'released')),
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT stock_reservations_idempotency_key_key UNIQUE (idempotency_key)
        );
        CREATE INDEX stock_reservations_order_idx ON stock_reservations (order_id);

        CREATE TABLE orders (
            id                  text PRIMARY KEY,
            workflow_id         text NOT NULL,
            buyer               text NOT NULL,
            merchant            text NOT NULL,
            currency            char(3) NOT NULL,
            total               bigint NOT NULL CHECK (total > 0),
            wallet_amount       bigint NOT NULL DEFAULT 0 CHECK (wallet_amount >= 0),
            gateway_amount      bigint NOT NULL DEFAULT 0 CHECK (gateway_amount >= 0),
            method              text NOT NULL CHECK (method IN ('wallet', 'gateway', 'split')),
            gateway             text,
            buyer_wallet_id     text,
            merchant_wallet_id  text NOT NULL,
            items               jsonb NOT NULL DEFAULT '[]',
            status              text NOT NULL DEFAULT 'pending' CHECK (status IN
                                ('pending', 'awaiting_payment', 'paid', 'failed', 'expired', 'canceled',
                                 'partially_refunded', 'refunded')),
            failure_code        text,
            refunded_amount     bigint NOT NULL DEFAULT 0,
            expires_at          timestamptz,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT orders_workflow_id_key UNIQUE (workflow_id),
            CONSTRAINT orders_tenders_sum_to_total CHECK (wallet_amount + gateway_amount = total),
            CONSTRAINT orders_refunds_within_total CHECK (refunded_amount >= 0 AND refunded_amount <= total)
        );
        CREATE INDEX orders_buyer_idx ON orders (buyer, created_at);
        CREATE INDEX orders_merchant_idx ON orders (merchant, created_at);
        """
    )


def downgrade() -> None:
    execute_all("DROP TABLE orders; DROP TABLE stock_reservations; DROP TABLE products;")
