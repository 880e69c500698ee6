"""Engines and the unit of work.

Repositories take an ``AsyncConnection`` and never commit; the caller (an activity or a request) owns one
transaction. ``in_transaction`` retries the whole unit on serialization failures and deadlocks so those
never leak to callers (QUALITY R19): a retried unit is safe because every write is keyed (§4).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from payweave import faults

T = TypeVar("T")

# SQLSTATEs that mean "try the whole transaction again": serialization_failure, deadlock_detected.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
MAX_TX_ATTEMPTS = 8


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    # No pool_pre_ping: on asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) before every unit of work.
    # A connection the server closed while it sat in the pool (restart, pg_terminate_backend, idle timeout) is
    # already known to asyncpg, so checkout asks it without a round trip (_discard_if_closed); one that dies
    # during a unit is invalidated by SQLAlchemy and the unit retried (in_transaction); pool_recycle bounds
    # the age of the rest.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800)
    event.listen(engine.sync_engine, "checkout", _discard_if_closed)
    event.listen(engine.sync_engine, "before_cursor_execute", _one_write_per_statement_unit)
    return engine


def _discard_if_closed(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    """Pool checkout hook: a connection the server has closed is replaced (and the pool refreshed, as a failed
    pre-ping would) before anyone uses it."""
    if dbapi_connection.driver_connection.is_closed():
        raise InvalidatePoolError("the server closed this pooled connection")


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


async def in_transaction(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` in one transaction, committing once; retry on 40001/40P01 and a lost connection."""
    return await _unit(engine, work, autocommit=False)


async def in_statement(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` whose one write is a single statement, without BEGIN and COMMIT: a statement is atomic
    on its own, so the unit costs one round trip instead of three. Reads before or after the write are fine
    (under READ COMMITTED each statement sees the latest commits anyway); a second write, or a ``FOR UPDATE``
    (a lock that would end with its statement), is refused before it runs — that work needs in_transaction.
    So does work that raises *after* its write on what the write returned (post_journal's balance checks): with
    no transaction there is no rollback to undo it. Same retries as in_transaction."""
    return await _unit(engine, work, autocommit=True)


# Marks a pooled connection as running an in_statement unit: how many writes it may still run.
_WRITES_LEFT = "payweave_writes_left"
_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)  # FOR UPDATE included on purpose


def _one_write_per_statement_unit(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    left = conn.info.get(_WRITES_LEFT)
    if left is None or not _WRITE.search(statement):
        return
    if left < 1:
        raise RuntimeError("in_statement: a second write or a FOR UPDATE needs in_transaction")
    conn.info[_WRITES_LEFT] = left - 1


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, its connections in autocommit (cached on the engine)."""
    found: AsyncEngine | None = getattr(engine.sync_engine, "_payweave_autocommit", None)
    if found is None:
        found = engine.execution_options(isolation_level="AUTOCOMMIT")
        engine.sync_engine._payweave_autocommit = found  # type: ignore[attr-defined]
    return found


async def _unit(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *, autocommit: bool
) -> T:
    for attempt in range(1, MAX_TX_ATTEMPTS + 1):
        try:
            faults.before_begin()  # tests only (QUALITY R6): a transient failure before any work
            if autocommit:
                async with _autocommit(engine).connect() as conn:
                    info = (await conn.get_raw_connection()).info
                    info[_WRITES_LEFT] = 1
                    try:
                        result = await work(conn)
                    finally:
                        info.pop(_WRITES_LEFT, None)
            else:
                async with engine.begin() as conn:
                    result = await work(conn)
            faults.after_commit()  # tests only (QUALITY R2): a crash between the commit and the return
            return result
        except DBAPIError as exc:
            # A connection lost mid-unit (a restarted or terminated backend) is retried on a fresh one, like a
            # serialization failure: every write is keyed, so a unit that did commit finds its work done.
            retryable = sqlstate(exc) in RETRYABLE_SQLSTATES or exc.connection_invalidated
            if not retryable or attempt == MAX_TX_ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")
