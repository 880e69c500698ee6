"""payments database: group-buy sessions and their participants; orders may belong to a session

Revision ID: p0005
Revises: p0004
"""

from db.migrations.sql import execute_all

revision = "p0005"
down_revision = "p0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        CREATE TABLE group_buys (
            id                      text PRIMARY KEY,
            workflow_id             text NOT NULL,
            factory                 text NOT NULL,
            factory_wallet_id       text NOT NULL,
            product                 text NOT NULL,
            unit_price              bigint NOT NULL CHECK (unit_price > 0),
            currency                char(3) NOT NULL,
            moq                     integer NOT NULL CHECK (moq > 0),
            max_units               integer CHECK (max_units IS NULL OR max_units >= moq),
            deadline                timestamptz NOT NULL,
            production_deadline     timestamptz,
            fee_bps                 integer NOT NULL DEFAULT 0 CHECK (fee_bps >= 0 AND fee_bps <= 10000),
            close_when_moq_reached  boolean NOT NULL DEFAULT false,
            -- open: taking joins, no decision yet (the sweeper drives one past the deadline).
            status                  text NOT NULL DEFAULT 'open' CHECK (status IN
                                    ('open', 'succeeded', 'completed', 'failed', 'canceled', 'refunded')),
            failure_code            text,
            cancel_reason           text,
            -- Units of participants not declined/expired: kept here so max_units holds under concurrent joins.
            committed_units         integer NOT NULL DEFAULT 0 CHECK (committed_units >= 0),
            paid_units              integer NOT NULL DEFAULT 0,
            paid_amount             bigint NOT NULL DEFAULT 0,
            paid_participants       integer NOT NULL DEFAULT 0,
            fee_amount              bigint,
            decided_at              timestamptz,
            created_at              timestamptz NOT NULL DEFAULT now(),
            updated_at              timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT group_buys_workflow_id_key UNIQUE (workflow_id),
            CONSTRAINT group_buys_within_max_units CHECK (max_units IS NULL OR committed_units <= max_units)
        );
        CREATE INDEX group_buys_factory_idx ON group_buys (factory, created_at);
        CREATE INDEX group_buys_open_deadline_idx ON group_buys (deadline) WHERE status = 'open';

        -- One row per join. seq orders the participants of a session for batched, resumable bulk steps.
        CREATE TABLE group_buy_participants (
            id               text PRIMARY KEY,
            seq              bigserial NOT NULL,
            group_buy_id     text NOT NULL REFERENCES group_buys (id),
            idempotency_key  text NOT NULL,
            buyer            text NOT NULL,
            quantity         integer NOT NULL CHECK (quantity > 0),
            amount           bigint NOT NULL CHECK (amount > 0),
            method           text NOT NULL CHECK (method IN ('wallet', 'gateway')),
            gateway          text CHECK (gateway IN ('stripe', 'xendit')),
            wallet_id        text,
            hold_id          text,
            payment_id       text,
            -- joining → held (wallet) | awaiting_payment → paid (gateway) → captured (wallet, after success)
            -- declined / expired / late_refunded: never counted;
            -- released (a hold) / refunded / refunded_to_wallet: after a bulk refund
            status           text NOT NULL DEFAULT 'joining' CHECK (status IN
                             ('joining', 'held', 'awaiting_payment', 'paid', 'captured', 'declined', 'expired',
                              'late_refunded', 'released', 'refund_pending', 'refunded', 'refunded_to_wallet')),
            failure_code     text,
            order_id         text,
            refund_id        text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT group_buy_participants_idempotency_key_key UNIQUE (idempotency_key),
            CONSTRAINT group_buy_participants_seq_key UNIQUE (seq),
            CONSTRAINT group_buy_participants_tender CHECK
                ((method = 'wallet' AND wallet_id IS NOT NULL) OR (method = 'gateway' AND gateway IS NOT NULL))
        );
        -- A buyer joins a session once (a declined or expired attempt does not count).
        CREATE UNIQUE INDEX group_buy_participants_one_per_buyer ON group_buy_participants (group_buy_id, buyer)
            WHERE status NOT IN ('declined', 'expired', 'late_refunded');
        CREATE INDEX group_buy_participants_session_seq_idx ON group_buy_participants (group_buy_id, seq);
        CREATE INDEX group_buy_participants_buyer_idx ON group_buy_participants (buyer, created_at);

        ALTER TABLE orders ADD COLUMN group_buy_id text REFERENCES group_buys (id);
        CREATE INDEX orders_group_buy_idx ON orders (group_buy_id) WHERE group_buy_id IS NOT NULL;
        """
    )


def downgrade() -> None:
    execute_all(
        "ALTER TABLE orders DROP COLUMN group_buy_id; DROP TABLE group_buy_participants; DROP TABLE group_buys;"
    )
