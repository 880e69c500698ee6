#!/bin/bash
# Runs once, when the postgres container initialises an empty data directory
# (/docker-entrypoint-initdb.d). It creates two roles and four databases:
#
#   role payweave  owns payweave_wallet   (the ledger: wallets, journals, entries, holds)
#                  and  payweave_payments (payments, transfers, idempotency keys, webhook events)
#                  `payweave migrate` (the compose `migrate` job) creates the tables.
#   role temporal  owns temporal and temporal_visibility
#                  temporalio/auto-setup creates the schema (SKIP_DB_CREATE=true in docker-compose.yml).
#
# Neither role is a superuser. The passwords come from the container's environment (docker-compose.yml).
# They are passed to psql as variables and quoted by psql (:'name'), never spliced into SQL by the shell.
set -euo pipefail

: "${PAYWEAVE_DB_PASSWORD:?PAYWEAVE_DB_PASSWORD must be set}"
: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD must be set}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v payweave_password="$PAYWEAVE_DB_PASSWORD" -v temporal_password="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE payweave LOGIN PASSWORD :'payweave_password';
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';

CREATE DATABASE payweave_wallet OWNER payweave;
CREATE DATABASE payweave_payments OWNER payweave;
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

-- Only the owner (and superusers) may connect.
REVOKE ALL ON DATABASE payweave_wallet FROM PUBLIC;
REVOKE ALL ON DATABASE payweave_payments FROM PUBLIC;
REVOKE ALL ON DATABASE temporal FROM PUBLIC;
REVOKE ALL ON DATABASE temporal_visibility FROM PUBLIC;
SQL

# No schema grants are needed: since PostgreSQL 15 the public schema of a new database belongs to
# pg_database_owner, so each owner may create its tables (and trusted extensions such as btree_gin,
# which Temporal's visibility schema uses) while PUBLIC may not.
