"""Schema migrations: one alembic section per database (``db/migrations/wallet``, ``db/migrations/payments``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASES = ("wallet", "payments")


def alembic_config(database: str) -> Config:
    if database not in DATABASES:
        raise ValueError(f"unknown database {database!r}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / database))
    return cfg


def _upgrade(connection: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def upgrade(database: str, url: str) -> None:
    """Bring ``database`` (wallet | payments) at ``url`` to the newest revision."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, alembic_config(database))
    finally:
        await engine.dispose()


async def upgrade_all(wallet_url: str, payments_url: str) -> None:
    await upgrade("wallet", wallet_url)
    await upgrade("payments", payments_url)
