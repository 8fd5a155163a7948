-- Least-privilege role for rose-agent. Run as a superuser (or the database owner on managed
-- services), e.g.:
--   psql "$DATABASE_URL" -v password="'choose-a-password'" -v dbname=railway -f scripts/create-monitoring-role.sql
-- then give the agent AGENT_DATABASE_URL=postgresql://rose_monitor:<password>@host:5432/railway
--
-- pg_monitor: read pg_stat_activity of every session, pg_stat_statements, sizes, settings.
-- CONNECTION LIMIT 3: the agent holds one connection; the limit caps any mistake.
-- No write privileges: the agent's sessions are read-only on top of this.
CREATE ROLE rose_monitor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT 3 PASSWORD :password;
GRANT pg_monitor TO rose_monitor;
GRANT CONNECT ON DATABASE :"dbname" TO rose_monitor;
ALTER ROLE rose_monitor SET default_transaction_read_only = on;
ALTER ROLE rose_monitor SET statement_timeout = '5s';
ALTER ROLE rose_monitor SET lock_timeout = '1s';
-- The LangGraph migration version (rose_pg_schema_migration_version) needs to read one table:
GRANT SELECT ON checkpoint_migrations TO rose_monitor;
