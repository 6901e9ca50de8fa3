-- PostgreSQL roles and database for pybmpmon, with least privilege.
--
-- Run once, as a superuser (or a role with CREATEROLE and CREATEDB), with psql:
--
--     sudo -u postgres psql -v ON_ERROR_STOP=1 \
--         -v collector_password="$(openssl rand -base64 24)" \
--         -f etc/postgresql-setup.sql
--
-- and put the same password in pybmpmon's .env (DB_PASSWORD).  Optional
-- variables: -v dbname=... (default pybmpmon).  Running it again is harmless:
-- what exists is kept (the collector's password is set again).
--
-- What it makes:
--   pybmpmon        LOGIN role of the collector.  It owns the schema "pybmpmon"
--                   and everything in it: `pybmpmon serve` (and `pybmpmon
--                   migrate`) apply the schema migrations at start and create
--                   the daily partitions of route_updates.  No superuser, no
--                   CREATEDB/CREATEROLE, no rights outside its schema.
--   pybmpmon_read   NOLOGIN group role for operators and dashboards: read
--                   every table and view of the schema, now and as migrations
--                   and partitions add them; nothing else.  Give it to people:
--                       CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE pybmpmon_read;
--                       ALTER ROLE alice SET default_transaction_read_only = on;
--   the database    owned by the role running this script (not by the
--                   collector); PUBLIC may not connect; the schema is first on
--                   its search_path, so unqualified names (current_routes, ...)
--                   work for both roles.
--
-- TimescaleDB (optional): pybmpmon uses it when the extension is present in the
-- database; the collector cannot create it (not a trusted extension).  As a
-- superuser, after this script: \c pybmpmon  then  CREATE EXTENSION timescaledb;
-- before the collector's first start.

\if :{?dbname}
\else
\set dbname pybmpmon
\endif
\if :{?collector_password}
\else
\echo 'set the collector password: psql -v collector_password=... -f etc/postgresql-setup.sql'
\quit
\endif

SELECT format('CREATE ROLE pybmpmon LOGIN PASSWORD %L', :'collector_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pybmpmon') \gexec
ALTER ROLE pybmpmon LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'collector_password';

SELECT 'CREATE ROLE pybmpmon_read NOLOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pybmpmon_read') \gexec

SELECT format('CREATE DATABASE %I ENCODING ''UTF8'' TEMPLATE template0', :'dbname')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') \gexec

REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
-- TEMPORARY: the collector stages its COPY batches in a temporary table.
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO pybmpmon;
GRANT CONNECT ON DATABASE :"dbname" TO pybmpmon_read;
ALTER DATABASE :"dbname" SET search_path = pybmpmon, public;

\connect :"dbname"

-- Nobody creates objects in public (PostgreSQL 15 already revokes it).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS pybmpmon AUTHORIZATION pybmpmon;

GRANT USAGE ON SCHEMA pybmpmon TO pybmpmon_read;
GRANT SELECT ON ALL TABLES IN SCHEMA pybmpmon TO pybmpmon_read;
-- Tables, views and partitions the collector creates later.
ALTER DEFAULT PRIVILEGES FOR ROLE pybmpmon IN SCHEMA pybmpmon
    GRANT SELECT ON TABLES TO pybmpmon_read;
-- Functions (prefix_history, routes_covering, ...) are executable by anyone
-- who may use the schema: PostgreSQL's default.
