"""wallet database: wallets, journals, immutable entries, holds

Revision ID: w0001
Revises:
"""

from db.migrations.sql import execute_all

revision = "w0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_all(
        """
        CREATE TABLE wallets (
            id          text PRIMARY KEY,
            owner       text NOT NULL,
            currency    char(3) NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('customer', 'system')),
            status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
            balance     bigint NOT NULL DEFAULT 0,
            held        bigint NOT NULL DEFAULT 0,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT wallets_owner_currency_key UNIQUE (owner, currency),
            -- System accounts (gateway_clearing, escrow, transit, platform_fees) may go negative;
            -- customer wallets may not, whatever the code above this does (QUALITY R20).
            CONSTRAINT wallets_customer_balance_nonnegative CHECK (kind = 'system' OR balance >= 0),
            CONSTRAINT wallets_held_within_balance CHECK (held >= 0 AND (kind = 'system' OR held <= balance))
        );

        CREATE TABLE journals (
            id               bigserial PRIMARY KEY,
            idempotency_key  text NOT NULL,
            kind             text NOT NULL,
            currency         char(3) NOT NULL,
            description      text,
            saga_id          text,
            hold_id          text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT journals_idempotency_key_key UNIQUE (idempotency_key)
        );
        CREATE INDEX journals_saga_id_idx ON journals (saga_id);

        CREATE TABLE entries (
            id             bigserial PRIMARY KEY,
            journal_id     bigint NOT NULL REFERENCES journals (id),
            wallet_id      text NOT NULL REFERENCES wallets (id),
            amount         bigint NOT NULL CHECK (amount <> 0),
            currency       char(3) NOT NULL,
            balance_after  bigint NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX entries_wallet_id_id_idx ON entries (wallet_id, id);
        CREATE INDEX entries_journal_id_idx ON entries (journal_id);

        CREATE TABLE holds (
            id               text PRIMARY KEY,
            idempotency_key  text NOT NULL,
            wallet_id        text NOT NULL REFERENCES wallets (id),
            amount           bigint NOT NULL CHECK (amount > 0),
            captured_amount  bigint NOT NULL DEFAULT 0 CHECK (captured_amount >= 0),
            currency         char(3) NOT NULL,
            status           text NOT NULL DEFAULT 'open'
                             CHECK (status IN ('open', 'captured', 'released', 'expired')),
            saga_id          text,
            expires_at       timestamptz NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT holds_idempotency_key_key UNIQUE (idempotency_key),
            CONSTRAINT holds_capture_within_amount CHECK (captured_amount <= amount)
        );
        CREATE INDEX holds_open_expires_at_idx ON holds (expires_at) WHERE status = 'open';
        CREATE INDEX holds_wallet_id_idx ON holds (wallet_id);

        -- Entries and journals are immutable: corrections are new journals (ARCHITECTURE §3).
        CREATE FUNCTION payweave_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
        END $$;
        CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
            FOR EACH ROW EXECUTE FUNCTION payweave_forbid_change();
        CREATE TRIGGER journals_immutable BEFORE UPDATE OR DELETE ON journals
            FOR EACH ROW EXECUTE FUNCTION payweave_forbid_change();

        -- Every journal balances to zero, checked by the database at commit (defence in depth for I1).
        CREATE FUNCTION payweave_check_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE total numeric; n integer;
        BEGIN
            SELECT coalesce(sum(amount), 0), count(*) INTO total, n FROM entries WHERE journal_id = NEW.journal_id;
            IF total <> 0 OR n < 2 THEN
                RAISE EXCEPTION 'journal % does not balance (sum %, % entries)', NEW.journal_id, total, n
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION payweave_check_journal_balanced();
        """
    )


def downgrade() -> None:
    execute_all(
        """
        DROP TABLE holds; DROP TABLE entries; DROP TABLE journals; DROP TABLE wallets;
        DROP FUNCTION payweave_check_journal_balanced(); DROP FUNCTION payweave_forbid_change();
        """
    )
