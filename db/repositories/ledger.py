"""The wallet ledger: wallets, double-entry journals, holds. All wallet-database SQL lives here.

Rules every function keeps:
* it runs inside the caller's unit of work and never commits. place_hold and capture_hold also run without a
  transaction (``in_statement``): each writes in one statement that writes everything or nothing;
* every write is keyed (journal / hold ``idempotency_key`` is UNIQUE): a retried or concurrent duplicate
  finds the first result instead of writing again (``INSERT … ON CONFLICT DO NOTHING`` then read);
* wallet rows are locked in id order, so two journals touching the same wallets cannot deadlock;
* funds and status are checked under the row lock, and the CHECK constraints stay the last word.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from payweave import errors
from payweave.contracts.ledger import Entry, Hold, Journal, Posting, Wallet

SYSTEM_ACCOUNTS = ("gateway_clearing", "escrow", "transit", "platform_fees")

_WALLET_COLUMNS = "id, owner, currency, kind, status, balance, held, created_at, updated_at"
_HOLD_COLUMNS = (
    "id, idempotency_key, wallet_id, amount, captured_amount, currency, status, saga_id, expires_at"
)


def system_wallet_id(name: str, currency: str) -> str:
    return f"sys_{name}_{currency.lower()}"


def _wallet(row: Any) -> Wallet:
    return Wallet.model_validate(dict(row._mapping))


def _hold(row: Any) -> Hold:
    return Hold.model_validate(dict(row._mapping))


# --- wallets -------------------------------------------------------------------------------------------


async def create_wallet(
    conn: AsyncConnection, *, wallet_id: str, owner: str, currency: str
) -> tuple[Wallet, bool]:
    """One wallet per (owner, currency): returns (wallet, created)."""
    row = (
        await conn.execute(
            text(
                f"INSERT INTO wallets (id, owner, currency, kind) VALUES (:id, :owner, :currency, 'customer') "
                f"ON CONFLICT (owner, currency) DO NOTHING RETURNING {_WALLET_COLUMNS}"
            ),
            {"id": wallet_id, "owner": owner, "currency": currency},
        )
    ).first()
    if row is not None:
        return _wallet(row), True
    existing = (
        await conn.execute(
            text(f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE owner = :owner AND currency = :currency"),
            {"owner": owner, "currency": currency},
        )
    ).one()
    return _wallet(existing), False


async def ensure_system_wallet(conn: AsyncConnection, name: str, currency: str) -> str:
    if name not in SYSTEM_ACCOUNTS:
        raise ValueError(f"unknown system account {name!r}")
    wallet_id = system_wallet_id(name, currency)
    await conn.execute(
        text(
            "INSERT INTO wallets (id, owner, currency, kind) VALUES (:id, :owner, :currency, 'system') "
            "ON CONFLICT DO NOTHING"
        ),
        {"id": wallet_id, "owner": f"system:{name}", "currency": currency},
    )
    return wallet_id


async def get_wallet(conn: AsyncConnection, wallet_id: str) -> Wallet | None:
    row = (
        await conn.execute(text(f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE id = :id"), {"id": wallet_id})
    ).first()
    return _wallet(row) if row else None


async def find_wallet(conn: AsyncConnection, owner: str, currency: str) -> Wallet | None:
    row = (
        await conn.execute(
            text(f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE owner = :owner AND currency = :currency"),
            {"owner": owner, "currency": currency},
        )
    ).first()
    return _wallet(row) if row else None


async def list_wallets(conn: AsyncConnection, owner: str) -> list[Wallet]:
    rows = await conn.execute(
        text(
            f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE owner = :owner AND kind = 'customer' ORDER BY created_at, id"
        ),
        {"owner": owner},
    )
    return [_wallet(r) for r in rows]


async def set_wallet_status(conn: AsyncConnection, wallet_id: str, status: str) -> Wallet:
    row = (
        await conn.execute(
            text(
                f"UPDATE wallets SET status = :status, updated_at = now() WHERE id = :id AND kind = 'customer' "
                f"RETURNING {_WALLET_COLUMNS}"
            ),
            {"id": wallet_id, "status": status},
        )
    ).first()
    if row is None:
        raise errors.WalletNotFound(f"wallet {wallet_id} not found")
    return _wallet(row)


async def list_entries(
    conn: AsyncConnection, wallet_id: str, *, limit: int, starting_after: int | None = None
) -> list[Entry]:
    """Newest first; ``starting_after`` is the id of the last entry of the previous page (cursor)."""
    rows = await conn.execute(
        text(
            "SELECT e.id, e.journal_id, e.wallet_id, e.amount, e.currency, e.balance_after, e.created_at, "
            "       j.kind AS journal_kind, j.description "
            "FROM entries e JOIN journals j ON j.id = e.journal_id "
            "WHERE e.wallet_id = :wallet_id AND (CAST(:after AS bigint) IS NULL OR e.id < :after) "
            "ORDER BY e.id DESC LIMIT :limit"
        ),
        {"wallet_id": wallet_id, "after": starting_after, "limit": limit},
    )
    return [Entry.model_validate(dict(r._mapping)) for r in rows]


# --- journals ------------------------------------------------------------------------------------------


async def _lock_wallets(conn: AsyncConnection, wallet_ids: Sequence[str]) -> dict[str, Wallet]:
    rows = await conn.execute(
        # NO KEY UPDATE, not UPDATE: inserting a hold or an entry takes KEY SHARE on its wallet (foreign key),
        # which FOR UPDATE would conflict with — two concurrent holds on one wallet would deadlock.
        text(f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE"),
        {"ids": sorted(wallet_ids)},
    )
    return {w.id: w for w in map(_wallet, rows)}


def _check_posting(
    wallet: Wallet | None, wallet_id: str, amount: int, currency: str, *, compensation: bool = False
) -> None:
    if wallet is None:
        raise errors.WalletNotFound(f"wallet {wallet_id} not found")
    if wallet.currency != currency:
        raise errors.CurrencyMismatch(f"wallet {wallet_id} holds {wallet.currency}, not {currency}")
    if wallet.kind == "system" or (compensation and amount > 0):
        # A compensation that gives money back is applied whatever the wallet's status meanwhile.
        return
    if wallet.status == "frozen":
        raise errors.WalletFrozen(f"wallet {wallet_id} is frozen")
    if wallet.status == "closed":
        raise errors.WalletClosed(f"wallet {wallet_id} is closed")
    if amount < 0 and wallet.available + amount < 0:
        raise errors.InsufficientFunds(
            f"wallet {wallet_id} has {wallet.available} available, needs {-amount}"
        )


_JOURNAL_BY_KEY = text(
    "SELECT j.id AS jid, j.idempotency_key AS jkey, j.kind AS jkind, j.currency AS jcurrency, "
    "       j.external_ref AS jexternal_ref, "
    "       e.id, e.journal_id, e.wallet_id, e.amount, e.currency, e.balance_after, e.created_at "
    "FROM journals j LEFT JOIN entries e ON e.journal_id = j.id WHERE j.idempotency_key = :key ORDER BY e.id"
)


_LEFT_IN_TRANSIT = text(
    "SELECT j.saga_id AS saga, w.id AS transit, w.currency, sum(e.amount) AS left_in_transit FROM entries e "
    "JOIN journals j ON j.id = e.journal_id JOIN wallets w ON w.id = e.wallet_id "
    "WHERE w.owner = 'system:transit' AND j.saga_id = ANY(:ids) "
    "GROUP BY j.saga_id, w.id, w.currency HAVING sum(e.amount) <> 0"
)


async def left_in_transit(conn: AsyncConnection, saga_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The sagas among ``saga_ids`` whose transit legs do not net to zero: saga, transit wallet, currency and
    what is left there (positive: money waiting in transit). ``payweave ledger verify`` (I1) and
    ``payweave ledger release-transit`` read the same sum."""
    return [dict(r) for r in (await conn.execute(_LEFT_IN_TRANSIT, {"ids": list(saga_ids)})).mappings()]


async def find_journal(conn: AsyncConnection, idempotency_key: str) -> Journal | None:
    """The journal posted under ``idempotency_key``, with its entries, in one round trip."""
    rows = (await conn.execute(_JOURNAL_BY_KEY, {"key": idempotency_key})).all()
    if not rows:
        return None
    first = rows[0]
    return Journal(
        id=first.jid,
        idempotency_key=first.jkey,
        kind=first.jkind,
        currency=first.jcurrency.strip(),
        entries=[Entry.model_validate(dict(r._mapping)) for r in rows if r.id is not None],
        created=False,
        external_ref=first.jexternal_ref,
    )


# A journal in ONE statement (one round trip), in this order:
# 1. the journal row, keyed: ON CONFLICT DO NOTHING waits for a concurrent attempt with the same key and then
#    returns nothing (the caller reads the first result);
# 2. only if the row is new (EXISTS): every wallet the journal touches, locked in id order FOR NO KEY UPDATE.
#    Locking waits for step 1, so a duplicate holds no wallet while it waits on the key (no deadlock with the
#    first attempt), and locks nothing once that committed;
# 3. the checks of ``_check_postings`` on the locked rows (a wallet that fails one is ``refused``);
# 4. only if nothing is refused: balances move and the entries are written, each entry's balance_after read back
#    from the balance the UPDATE produced (the wallet's final balance minus its later postings in the journal).
# A capture (``capture=True``) first locks its hold FOR UPDATE if it is still open (a hold that is not, or stops
# being while we wait for its lock, is simply not there: nothing below happens); then, as capture_hold always did,
# the wallets (1 and 2 swap: duplicates of a capture queue on the hold, holding nothing), checked with the whole
# hold given back from ``held`` (``released``); the journal row only if nothing is refused (a refused capture
# writes nothing, with or without a transaction around it); then 4, the hold wallet giving the hold back in the
# same UPDATE as its balance (a statement changes a row once), and the hold becomes ``captured``.
# Result: the first row's ``refused_wallets`` set = a check refused, the locked wallets as the checks saw them in
# it (``_check_postings`` says which); otherwise ``jid`` NULL = nothing written (the key existed, or the hold was
# not open); otherwise one row per entry. The CHECK constraints stay the last word on balance and held.
def _journal_statement(*, capture: bool) -> TextClause:
    gate = "hold" if capture else "journal"  # what must exist before any wallet is locked
    hold = """hold AS MATERIALIZED (
        SELECT id, wallet_id, amount FROM holds WHERE id = :hold_id AND status = 'open' FOR UPDATE
    )"""
    journal = f"""journal AS (
        INSERT INTO journals (idempotency_key, kind, currency, description, saga_id, hold_id, external_ref)
        SELECT :key, :kind, :currency, :description, :saga_id, :hold_id, :external_ref
        {"FROM hold WHERE NOT EXISTS (SELECT FROM refused)" if capture else ""}
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id
    )"""
    released = "UNION ALL SELECT wallet_id, 0, amount FROM hold" if capture else ""
    checks = f"""posting AS (
        SELECT * FROM unnest(CAST(:wallets AS text[]), CAST(:amounts AS bigint[]))
                      WITH ORDINALITY AS p(wallet_id, amount, n)
    ), delta AS (
        SELECT id, CAST(sum(amount) AS bigint) AS amount, CAST(sum(released) AS bigint) AS released
        FROM (SELECT wallet_id AS id, amount, 0 AS released FROM posting {released}) AS d
        GROUP BY id
    ), locked AS MATERIALIZED (
        SELECT {_WALLET_COLUMNS} FROM wallets
        WHERE id IN (SELECT id FROM delta) AND EXISTS (SELECT FROM {gate})
        ORDER BY id FOR NO KEY UPDATE
    ), refused AS (
        SELECT d.id FROM delta d LEFT JOIN locked w ON w.id = d.id
        WHERE NOT coalesce(
            w.id IS NOT NULL
            AND NOT (w.kind = 'system' AND w.id = ANY(CAST(:customer_wallets AS text[])))
            AND CAST(w.currency AS text) = CAST(:currency AS text)
            AND (w.id = ANY(CAST(:held_debits AS text[]))
                 OR w.kind = 'system'
                 OR (CAST(:compensation AS boolean) AND d.amount > 0)
                 OR (w.status = 'active'
                     AND (d.amount >= 0 OR w.balance - (w.held - d.released) + d.amount >= 0))),
            false)
    )"""
    moves = """moved AS (
        UPDATE wallets w SET balance = w.balance + d.amount, held = w.held - d.released, updated_at = now()
        FROM delta d
        WHERE w.id = d.id AND EXISTS (SELECT FROM journal) AND NOT EXISTS (SELECT FROM refused)
        RETURNING w.id, w.balance, d.amount AS delta
    ), entry AS (
        INSERT INTO entries (journal_id, wallet_id, amount, currency, balance_after)
        SELECT j.id, p.wallet_id, p.amount, :currency,
               m.balance - m.delta + CAST(sum(p.amount) OVER (PARTITION BY p.wallet_id ORDER BY p.n) AS bigint)
        FROM journal j CROSS JOIN posting p JOIN moved m ON m.id = p.wallet_id
        ORDER BY p.n
        RETURNING id, journal_id, wallet_id, amount, currency, balance_after, created_at
    )"""
    captured = """captured AS (
        UPDATE holds SET status = 'captured', captured_amount = :captured, updated_at = now()
        WHERE id IN (SELECT id FROM hold) AND EXISTS (SELECT FROM moved)
    )"""
    ctes = [hold, checks, journal, moves, captured] if capture else [journal, checks, moves]
    return text(
        f"""
    WITH {", ".join(ctes)}
    SELECT journal.id AS jid, entry.*,
           CASE WHEN EXISTS (SELECT FROM {gate}) AND EXISTS (SELECT FROM refused) THEN (
               SELECT coalesce(json_agg(w), '[]') FROM (
                   SELECT l.id, l.owner, l.currency, l.kind, l.status, l.balance, l.held - d.released AS held,
                          l.created_at, l.updated_at
                   FROM locked l JOIN delta d ON d.id = l.id) AS w)
           END AS refused_wallets
    FROM (SELECT) AS one LEFT JOIN journal ON true LEFT JOIN entry ON true
    """
    )


_POST_JOURNAL = _journal_statement(capture=False)
_CAPTURE_HOLD = _journal_statement(capture=True)


def _check_balanced(postings: Sequence[Posting]) -> None:
    if sum(p.amount for p in postings) != 0 or len(postings) < 2 or any(p.amount == 0 for p in postings):
        raise errors.InvalidAmount("a journal needs two or more non-zero postings that sum to zero")


async def post_journal(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    kind: str,
    currency: str,
    postings: Sequence[Posting],
    description: str | None = None,
    saga_id: str | None = None,
    hold_id: str | None = None,
    compensation: bool = False,
    customer_wallets: Collection[str] = (),
    held_debits: Collection[str] = (),
    external_ref: str | None = None,
) -> Journal:
    """Post one balanced journal. A second call with the same key returns the first journal unchanged.

    ``compensation=True`` lets credits reach a frozen or closed wallet (an undo must always finish).
    ``customer_wallets`` are the wallet ids a caller supplied (a transfer's destination, say): they must be
    customer wallets, so no request can ever address ``gateway_clearing``, ``transit`` or ``escrow``.
    ``held_debits`` are wallets whose debit a hold captured in this transaction already reserved: the money was
    committed before any later freeze, so only the CHECK constraints apply to them.
    ``external_ref`` is the payments-DB payment a gateway-related journal is about (reconciliation, I5).
    """
    _check_balanced(postings)
    journal = await _write_journal(
        conn,
        _POST_JOURNAL,
        {},
        idempotency_key=idempotency_key,
        kind=kind,
        currency=currency,
        postings=postings,
        description=description,
        saga_id=saga_id,
        hold_id=hold_id,
        compensation=compensation,
        customer_wallets=customer_wallets,
        held_debits=held_debits,
        external_ref=external_ref,
    )
    if journal is None:  # an earlier (or concurrent, now committed) attempt posted it
        journal = await find_journal(conn, idempotency_key)
        assert journal is not None
    return journal


async def _write_journal(
    conn: AsyncConnection,
    statement: TextClause,
    extra: dict[str, Any],
    *,
    idempotency_key: str,
    kind: str,
    currency: str,
    postings: Sequence[Posting],
    description: str | None,
    saga_id: str | None,
    hold_id: str | None,
    compensation: bool,
    customer_wallets: Collection[str],
    held_debits: Collection[str],
    external_ref: str | None,
) -> Journal | None:
    """Run one ``_journal_statement``: the new journal, or None when it wrote nothing (the key was taken, or a
    capture's hold was not open); a refused journal raises the check that refused it."""
    rows = (
        await conn.execute(
            statement,
            {
                **extra,
                "key": idempotency_key,
                "kind": kind,
                "currency": currency,
                "description": description,
                "saga_id": saga_id,
                "hold_id": hold_id,
                "external_ref": external_ref,
                "wallets": [p.wallet_id for p in postings],
                "amounts": [p.amount for p in postings],
                "customer_wallets": list(customer_wallets),
                "held_debits": list(held_debits),
                "compensation": compensation,
            },
        )
    ).all()
    if (
        rows[0].refused_wallets is not None
    ):  # a check refused (nothing moved): say which, on what the checks saw
        per_wallet: dict[str, int] = defaultdict(int)
        for p in postings:
            per_wallet[p.wallet_id] += p.amount
        seen = {w.id: w for w in map(Wallet.model_validate, _json(rows[0].refused_wallets))}
        _check_postings(seen, per_wallet, currency, compensation, customer_wallets, held_debits)
        raise RuntimeError(f"journal {idempotency_key}: refused by the database, allowed by _check_postings")
    if rows[0].jid is None:
        return None
    if len(rows) != len(postings):  # every wallet was locked and moved: never commit half a journal
        raise RuntimeError(f"journal {idempotency_key}: {len(rows)} entries for {len(postings)} postings")
    return Journal(
        id=rows[0].jid,
        idempotency_key=idempotency_key,
        kind=kind,
        currency=currency,
        entries=sorted((Entry.model_validate(dict(r._mapping)) for r in rows), key=lambda e: e.id),
        created=True,
        external_ref=external_ref,
    )


def _json(value: Any) -> Any:
    """A json column as Python (asyncpg hands json over as text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _check_postings(
    locked: dict[str, Wallet],
    per_wallet: dict[str, int],
    currency: str,
    compensation: bool,
    customer_wallets: Collection[str],
    held_debits: Collection[str],
) -> None:
    """The rules a journal's wallets must pass (mirrored in ``_POST_JOURNAL``'s ``refused``): raises the first
    one that fails."""
    for wallet_id, amount in per_wallet.items():
        wallet = locked.get(wallet_id)
        if wallet is not None and wallet.kind == "system" and wallet_id in customer_wallets:
            wallet = None  # not a wallet a customer can address: as if it did not exist
        if wallet is not None and wallet_id in held_debits:
            if wallet.currency != currency:
                raise errors.CurrencyMismatch(f"wallet {wallet_id} holds {wallet.currency}, not {currency}")
            continue
        _check_posting(wallet, wallet_id, amount, currency, compensation=compensation)


# --- holds ---------------------------------------------------------------------------------------------


# A new hold in ONE statement (one round trip):
# 1. a hold already placed under the key (as this statement's snapshot sees it) is the answer: nothing else runs;
# 2. otherwise the wallet, locked FOR NO KEY UPDATE, and the checks of ``_check_posting`` for a debit of the
#    amount (a wallet that fails one is ``refused``);
# 3. only if nothing is refused: the hold row, keyed: ON CONFLICT DO NOTHING waits for a concurrent attempt with
#    the same key and then inserts nothing (the caller reads the first result). A wallet that does not exist is
#    left to the hold's foreign key, as always;
# 4. only if the hold is new: the wallet's ``held`` grows by the amount.
# Result: one row, the hold (new or earlier) or all NULL when none was placed, ``refused_wallet`` then the wallet as
# the checks saw it.
_PLACE_HOLD = text(
    f"""
    WITH existing AS (
        SELECT {_HOLD_COLUMNS} FROM holds WHERE idempotency_key = :key
    ), wallet AS MATERIALIZED (
        SELECT {_WALLET_COLUMNS} FROM wallets
        WHERE id = :wallet_id AND NOT EXISTS (SELECT FROM existing)
        FOR NO KEY UPDATE
    ), refused AS (
        SELECT id FROM wallet w
        WHERE NOT (CAST(w.currency AS text) = CAST(:currency AS text)
                   AND (w.kind = 'system' OR (w.status = 'active' AND w.balance - w.held - :amount >= 0)))
    ), hold AS (
        INSERT INTO holds (id, idempotency_key, wallet_id, amount, currency, saga_id, expires_at)
        SELECT :id, :key, :wallet_id, :amount, :currency, :saga_id, :expires_at
        WHERE NOT EXISTS (SELECT FROM existing) AND NOT EXISTS (SELECT FROM refused)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING {_HOLD_COLUMNS}
    ), held AS (
        UPDATE wallets SET held = held + :amount, updated_at = now()
        WHERE id = :wallet_id AND EXISTS (SELECT FROM hold)
    )
    SELECT h.*, (SELECT to_json(w) FROM wallet w WHERE EXISTS (SELECT FROM refused)) AS refused_wallet
    FROM (SELECT) AS one LEFT JOIN (SELECT * FROM hold UNION ALL SELECT * FROM existing) AS h ON true
    """
)


async def place_hold(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    hold_id: str,
    wallet_id: str,
    amount: int,
    currency: str,
    expires_at: datetime,
    saga_id: str | None = None,
) -> Hold:
    """Reserve ``amount`` of the wallet's available balance (two-phase: captured or released later).

    One statement (``_PLACE_HOLD``) that writes everything or nothing: a refused hold leaves no row behind."""
    if amount <= 0:
        raise errors.InvalidAmount("a hold must be positive")
    row = (
        await conn.execute(
            _PLACE_HOLD,
            {
                "id": hold_id,
                "key": idempotency_key,
                "wallet_id": wallet_id,
                "amount": amount,
                "currency": currency,
                "saga_id": saga_id,
                "expires_at": expires_at,
            },
        )
    ).one()
    if row.id is not None:
        return _hold(row)
    # None placed: a concurrent attempt with this key placed it first, or a check refused it (after a concurrent
    # duplicate's hold, perhaps: the key is the first answer, as when the hold row was inserted first).
    earlier = await _hold_by_key(conn, idempotency_key)
    if earlier is not None:
        return earlier
    refused = _json(row.refused_wallet)
    _check_posting(Wallet.model_validate(refused) if refused else None, wallet_id, -amount, currency)
    raise RuntimeError(f"hold {idempotency_key}: refused by the database, allowed by _check_posting")


async def _hold_by_key(conn: AsyncConnection, idempotency_key: str) -> Hold | None:
    row = (
        await conn.execute(
            text(f"SELECT {_HOLD_COLUMNS} FROM holds WHERE idempotency_key = :key"), {"key": idempotency_key}
        )
    ).first()
    return _hold(row) if row else None


async def get_hold(conn: AsyncConnection, hold_id: str) -> Hold | None:
    row = (
        await conn.execute(text(f"SELECT {_HOLD_COLUMNS} FROM holds WHERE id = :id"), {"id": hold_id})
    ).first()
    return _hold(row) if row else None


async def release_hold(conn: AsyncConnection, *, hold_id: str, status: str = "released") -> Hold | None:
    """Give the held amount back to ``available``. Releasing a hold that is no longer open changes nothing."""
    row = (
        await conn.execute(
            text(
                "UPDATE holds SET status = :status, updated_at = now() WHERE id = :id AND status = 'open' "
                f"RETURNING {_HOLD_COLUMNS}"
            ),
            {"id": hold_id, "status": status},
        )
    ).first()
    if row is None:
        return await get_hold(conn, hold_id)
    hold = _hold(row)
    await conn.execute(
        text("UPDATE wallets SET held = held - :amount, updated_at = now() WHERE id = :id"),
        {"amount": hold.amount, "id": hold.wallet_id},
    )
    return hold


async def capture_hold(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    hold_id: str,
    amount: int,
    counter_postings: Sequence[Posting],
    kind: str,
    description: str | None = None,
    saga_id: str | None = None,
    customer_wallets: Collection[str] = (),
    external_ref: str | None = None,
    hold: Hold | None = None,
) -> Journal:
    """Capture ``amount`` (≤ the hold) of an open hold in one journal; the rest of the hold is released.

    ``counter_postings`` are the credits the captured money goes to; they must sum to ``amount``. Two round trips:
    ``hold_to_capture`` (a read; skipped when the caller passes the ``hold`` it returned for this key and amount)
    then ONE statement (``_CAPTURE_HOLD``) that writes everything or nothing: the hold locked and checked open
    again (its wallet, currency, amount and saga never change), the wallets locked in id order, the journal, the
    whole hold given back from ``held``, the hold captured.
    """
    if hold is None:
        found = await hold_to_capture(conn, idempotency_key=idempotency_key, hold_id=hold_id, amount=amount)
        if isinstance(found, Journal):
            return found
        hold = found
    postings = [Posting(wallet_id=hold.wallet_id, amount=-amount), *counter_postings]
    _check_balanced(postings)
    journal = await _write_journal(
        conn,
        _CAPTURE_HOLD,
        {"captured": amount},
        idempotency_key=idempotency_key,
        kind=kind,
        currency=hold.currency,
        postings=postings,
        description=description,
        saga_id=saga_id or hold.saga_id,
        hold_id=hold.id,
        compensation=False,
        customer_wallets=customer_wallets,
        held_debits=(),
        external_ref=external_ref,
    )
    if journal is not None:
        return journal
    # Nothing written: a concurrent duplicate captured the hold first (its journal is the answer), or something
    # else closed it since hold_to_capture read it.
    existing = await find_journal(conn, idempotency_key)
    if existing is not None:
        return existing
    now = await get_hold(conn, hold.id)
    if now is None or now.status == "open":
        raise RuntimeError(
            f"capture {idempotency_key}: nothing written, hold {hold.id} is {now and now.status}"
        )
    raise errors.HoldNotOpen(f"hold {hold.id} is {now.status}")


async def hold_to_capture(
    conn: AsyncConnection, *, idempotency_key: str, hold_id: str, amount: int
) -> Hold | Journal:
    """A capture's first step, one read: the journal already posted under the key (a retry), or the hold, which
    must exist (NotFound), be open (HoldNotOpen) and cover ``amount`` (InvalidAmount). It locks nothing: the
    capture's statement locks the hold and checks it is still open. The journal and the hold are read in one
    snapshot, and a capture writes both at once, so a hold that is not open without a journal under the key was
    closed by something else."""
    row = (
        await conn.execute(
            text(
                "SELECT j.id AS journal_id, h.* FROM (SELECT) AS one "
                "LEFT JOIN journals j ON j.idempotency_key = :key LEFT JOIN holds h ON h.id = :hold_id"
            ),
            {"key": idempotency_key, "hold_id": hold_id},
        )
    ).one()
    if row.journal_id is not None:
        existing = await find_journal(conn, idempotency_key)
        assert existing is not None  # journals are never deleted
        return existing
    if row.id is None:
        raise errors.NotFound(f"hold {hold_id} not found")
    hold = _hold(row)
    if hold.status != "open":
        raise errors.HoldNotOpen(f"hold {hold_id} is {hold.status}")
    if not 0 < amount <= hold.amount:
        raise errors.InvalidAmount(f"capture of {amount} does not fit hold of {hold.amount}")
    return hold


async def capture_holds(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    hold_ids: Sequence[str],
    credit_to: str,
    kind: str,
    description: str | None = None,
    saga_id: str | None = None,
) -> list[Hold]:
    """Capture many open holds in full into the system account ``credit_to``, as ONE journal (a batch).

    Returns the holds as they are afterwards: ``captured`` ones are in the journal; any other status means the
    hold was gone (released or expired) before this batch. Calling again with the same key changes nothing.
    """
    rows = await conn.execute(
        text(f"SELECT {_HOLD_COLUMNS} FROM holds WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
        {"ids": list(hold_ids)},
    )
    holds = [_hold(r) for r in rows]
    if await find_journal(conn, idempotency_key) is not None:
        return holds
    to_capture = [h for h in holds if h.status == "open"]
    if not to_capture:
        return holds
    currency = to_capture[0].currency
    account = await ensure_system_wallet(conn, credit_to, currency)
    await _lock_wallets(conn, [account, *(h.wallet_id for h in to_capture)])
    captured = await conn.execute(
        text(
            "UPDATE holds SET status = 'captured', captured_amount = amount, updated_at = now() "
            f"WHERE id = ANY(:ids) AND status = 'open' RETURNING {_HOLD_COLUMNS}"
        ),
        {"ids": [h.id for h in to_capture]},
    )
    done = {h.id: h for h in map(_hold, captured)}
    await _unhold(conn, done.values())
    total = sum(h.amount for h in done.values())
    postings = [Posting(wallet_id=h.wallet_id, amount=-h.amount) for h in done.values()]
    await post_journal(
        conn,
        idempotency_key=idempotency_key,
        kind=kind,
        currency=currency,
        postings=[*postings, Posting(wallet_id=account, amount=total)],
        description=description,
        saga_id=saga_id,
        held_debits={h.wallet_id for h in done.values()},
    )
    return [done.get(h.id, h) for h in holds]


async def release_holds(
    conn: AsyncConnection, hold_ids: Sequence[str], *, status: str = "released"
) -> list[Hold]:
    """Release many holds in one statement; holds no longer open are left as they are."""
    rows = await conn.execute(
        text(
            f"UPDATE holds SET status = :status, updated_at = now() WHERE id = ANY(:ids) AND status = 'open' "
            f"RETURNING {_HOLD_COLUMNS}"
        ),
        {"ids": sorted(hold_ids), "status": status},
    )
    released = [_hold(r) for r in rows]
    await _unhold(conn, released)
    return released


async def _unhold(conn: AsyncConnection, holds: Collection[Hold]) -> None:
    per_wallet: dict[str, int] = defaultdict(int)
    for h in holds:
        per_wallet[h.wallet_id] += h.amount
    if per_wallet:
        ids = sorted(per_wallet)
        await _lock_wallets(conn, ids)  # in id order, like every other writer
        await conn.execute(
            text(
                "UPDATE wallets w SET held = w.held - d.amount, updated_at = now() "
                "FROM unnest(CAST(:ids AS text[]), CAST(:amounts AS bigint[])) AS d(id, amount) WHERE w.id = d.id"
            ),
            {"ids": ids, "amounts": [per_wallet[i] for i in ids]},
        )
