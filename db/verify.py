"""``payweave ledger verify``: the ledger invariants of QUALITY.md, checked against the databases.

I1 every journal's entries sum to zero (and it has two or more); I2 every wallet's balance equals the sum
of its entries (and its newest entry's balance_after), held equals its open holds; I3 no customer wallet
below zero, 0 ≤ held ≤ balance; I4 journal and hold keys unique, one payment row per gateway object;
I5 every gateway payment we kept (a credited deposit, a paid checkout, an accepted group-buy payment) is
matched by exactly one clearing capture journal (``external_ref`` = the payment id). The gateway side of I5 is
the reconciliation's (``payweave reconcile``): it needs the gateways, this needs only the databases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.repositories import ledger

CHECKS: dict[str, tuple[str, str]] = {
    "I1 journal sums to zero": (
        "wallet",
        """
        SELECT j.id AS journal, coalesce(sum(e.amount), 0) AS total, count(e.id) AS entries
        FROM journals j LEFT JOIN entries e ON e.journal_id = j.id
        GROUP BY j.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2""",
    ),
    "I1 entry currency matches journal": (
        "wallet",
        """
        SELECT e.id AS entry, e.currency, j.currency AS journal_currency
        FROM entries e JOIN journals j ON j.id = e.journal_id WHERE e.currency <> j.currency""",
    ),
    "I2 balance equals sum of entries": (
        "wallet",
        """
        SELECT w.id AS wallet, w.balance, coalesce(s.total, 0) AS entries_total
        FROM wallets w LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM entries GROUP BY wallet_id) s
             ON s.wallet_id = w.id
        WHERE w.balance <> coalesce(s.total, 0)""",
    ),
    "I2 balance equals newest balance_after": (
        "wallet",
        """
        SELECT w.id AS wallet, w.balance, last.balance_after
        FROM wallets w JOIN LATERAL (SELECT balance_after FROM entries e WHERE e.wallet_id = w.id
                                     ORDER BY e.id DESC LIMIT 1) last ON true
        WHERE w.balance <> last.balance_after""",
    ),
    "I2 held equals open holds": (
        "wallet",
        """
        SELECT w.id AS wallet, w.held, coalesce(h.total, 0) AS open_holds
        FROM wallets w LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM holds WHERE status = 'open'
                                  GROUP BY wallet_id) h ON h.wallet_id = w.id
        WHERE w.held <> coalesce(h.total, 0)""",
    ),
    "I3 customer wallet not below zero, held within balance": (
        "wallet",
        """
        SELECT id AS wallet, balance, held FROM wallets
        WHERE kind = 'customer' AND (balance < 0 OR held < 0 OR held > balance)""",
    ),
    "I4 one journal per step key": (
        "wallet",
        """
        SELECT idempotency_key, count(*) AS journals FROM journals GROUP BY idempotency_key HAVING count(*) > 1""",
    ),
    "I4 one hold per step key": (
        "wallet",
        """
        SELECT idempotency_key, count(*) AS holds FROM holds GROUP BY idempotency_key HAVING count(*) > 1""",
    ),
    "I4 one payment per gateway object": (
        "payments",
        """
        SELECT gateway, gateway_payment_id, count(*) AS payments FROM payments
        WHERE gateway_payment_id IS NOT NULL GROUP BY gateway, gateway_payment_id HAVING count(*) > 1""",
    ),
    "I4 a succeeded deposit is credited exactly once": (
        "payments",
        """
        SELECT id AS deposit, status, credited FROM payments
        WHERE purpose = 'deposit' AND status = 'succeeded' AND NOT credited""",
    ),
}


TRANSIT_CHECK = "I1 a finished transfer or refund leaves nothing in transit"


async def _check_transit(
    wallet_engine: AsyncEngine, payments_engine: AsyncEngine, report: Report, limit: int
) -> None:
    """Across both databases: the transit legs of every finished saga that routes money through ``transit`` —
    a completed or failed transfer, a succeeded or failed refund (its wallet part) — net to zero: money neither
    stranded between the debit and the credit, nor credited after its debit was reversed."""
    async with payments_engine.connect() as conn:
        finished = [
            row[0]
            for row in await conn.execute(
                text(
                    "SELECT workflow_id FROM transfers WHERE status IN ('completed', 'failed') "
                    "UNION ALL SELECT workflow_id FROM refunds WHERE status IN ('succeeded', 'failed')"
                )
            )
        ]
    rows: list[dict[str, object]] = []
    async with wallet_engine.connect() as conn:
        for start in range(0, len(finished), 5_000):
            left = await ledger.left_in_transit(conn, finished[start : start + 5_000])
            rows += [{"saga": r["saga"], "left_in_transit": r["left_in_transit"]} for r in left]
    report.checked.append(TRANSIT_CHECK)
    if rows:
        report.violations.append(Violation(TRANSIT_CHECK, rows[:limit]))


CLEARING_CHECK = "I5 a kept gateway payment has exactly one clearing capture"


async def _check_clearing(
    wallet_engine: AsyncEngine, payments_engine: AsyncEngine, report: Report, limit: int
) -> None:
    """Across both databases. Payments are read first: a saga posts its capture before it marks the payment,
    so a payment seen kept has its journal committed. Journals from before ``external_ref`` existed count by
    their saga id."""
    async with payments_engine.connect() as conn:
        kept = [
            (row[0], row[1])
            for row in await conn.execute(
                text(
                    "SELECT id, workflow_id FROM payments WHERE status = 'succeeded' "
                    "AND (purpose IN ('checkout', 'group_buy') OR (purpose = 'deposit' AND credited))"
                )
            )
        ]
    rows: list[dict[str, object]] = []
    async with wallet_engine.connect() as conn:
        for start in range(0, len(kept), 5_000):
            batch = kept[start : start + 5_000]
            result = await conn.execute(
                text(
                    "SELECT p.id AS payment, count(j.id) AS clearing_captures "
                    "FROM unnest(CAST(:ids AS text[]), CAST(:wfs AS text[])) AS p(id, wf) "
                    "LEFT JOIN journals j ON (j.external_ref = p.id OR (j.external_ref IS NULL AND j.saga_id = p.wf)) "
                    "  AND j.kind NOT LIKE '%\\_reversal' AND EXISTS (SELECT 1 FROM entries e "
                    "      JOIN wallets w ON w.id = e.wallet_id AND w.owner = 'system:gateway_clearing' "
                    "      WHERE e.journal_id = j.id AND e.amount < 0) "
                    "GROUP BY p.id HAVING count(j.id) <> 1"
                ),
                {"ids": [p for p, _ in batch], "wfs": [w for _, w in batch]},
            )
            rows += [dict(r) for r in result.mappings()]
    report.checked.append(CLEARING_CHECK)
    if rows:
        report.violations.append(Violation(CLEARING_CHECK, rows[:limit]))


@dataclass
class Violation:
    check: str
    rows: list[dict[str, object]]


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


async def verify_ledger(
    wallet_engine: AsyncEngine, payments_engine: AsyncEngine, *, limit: int = 20
) -> Report:
    report = Report()
    engines = {"wallet": wallet_engine, "payments": payments_engine}
    for name, (db, sql) in CHECKS.items():
        async with engines[db].connect() as conn:
            # One consistent snapshot per check, so a running system is not reported half-posted.
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            rows = (await conn.execute(text(f"{sql} LIMIT {int(limit)}"))).mappings().all()
        report.checked.append(name)
        if rows:
            report.violations.append(Violation(name, [dict(r) for r in rows]))
    await _check_transit(wallet_engine, payments_engine, report, limit)
    await _check_clearing(wallet_engine, payments_engine, report, limit)
    async with wallet_engine.connect() as conn:
        for table in ("wallets", "journals", "entries", "holds"):
            report.stats[table] = int(
                (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
    return report
