"""Run a block of SQL statements one by one (asyncpg executes a single statement per call)."""

from __future__ import annotations

from alembic import op


def split_statements(sql: str) -> list[str]:
    """Split on top-level ``;`` line ends, keeping ``$$ … $$`` function bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    in_body = False
    for line in sql.splitlines():
        if not current and (not line.strip() or line.strip().startswith("--")):
            continue
        current.append(line)
        in_body ^= line.count("$$") % 2 == 1
        if not in_body and line.split("--")[0].rstrip().endswith(";"):
            statements.append("\n".join(current).strip())
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def execute_all(sql: str) -> None:
    for statement in split_statements(sql):
        op.execute(statement)
