-- Least-privilege role for rose-agent. Idempotent: run it again at any time (it updates what
-- exists, creates what is missing). Valid before the app's setup() created LangGraph's tables.
-- Run as a superuser (or the database owner on managed services), e.g.:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -v password="'choose-a-password'" -v dbname=railway \
--        -v app_role=rose -v schema=public -f scripts/create-monitoring-role.sql
-- then give the agent AGENT_DATABASE_URL=postgresql://rose_monitor:<password>@host:5432/railway
--
-- Variables (psql -v):
--   password  the role's password, quoted as a literal ("'...'"); required when the role is
--             created, optional on a re-run (then the password is left as it is).
--   dbname    the app's database (default: the one psql is connected to).
--   app_role  the role the app (and its setup()) runs as: owns the version function below
--             (default: the role running this script).
--   schema    the schema of LangGraph's tables (default: public).
--   read_checkpoints  set (-v read_checkpoints=1) to let the role read checkpoints and
--             checkpoint_blobs, so check checkpoint_threads can measure checkpoints and bytes
--             per thread (finding checkpoint_bloat). Off by default: these tables hold the
--             users' conversations; without it the agent exports
--             rose_checkpoint_threads_readable 0 and raises no finding.
--
-- pg_monitor: read pg_stat_activity of every session, pg_stat_statements, sizes, settings.
-- CONNECTION LIMIT 5: one connection per agent (deploy/kubernetes runs 3 replicas, one agent
-- each), one for the new agent of a rolling update, one for `agent diagnose`; the limit still
-- caps any mistake. Raise it with the fleet (agents + 2): the agent warns one session ahead
-- (finding role_connection_limit).
-- No write privileges: the agent's sessions are read-only on top of this.
--
-- The LangGraph migration version (rose_pg_schema_migration_version, RoseLangGraphSchemaMismatch)
-- needs max(v) and count(*) of checkpoint_migrations, a table the app's setup() creates, often
-- after this script ran. Least privilege: not SELECT on every future table of the app (default
-- privileges would hand the monitoring role the checkpoints, i.e. the users' conversations, and
-- pg_read_all_data every table), but one SECURITY DEFINER function owned by the app role that
-- returns only those two numbers, for a table created before or after this script. When the
-- table already exists, SELECT on it (ten integers) is granted too.

-- Stop at the first error with a non-zero exit status even without -v ON_ERROR_STOP=1.
\set ON_ERROR_STOP on

\if :{?dbname}
\else
SELECT current_database() AS dbname \gset
\endif
\if :{?app_role}
\else
SELECT current_user AS app_role \gset
\endif
\if :{?schema}
\else
\set schema public
\endif

SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rose_monitor') AS create_role \gset
\if :create_role
\if :{?password}
\else
DO $$ BEGIN RAISE EXCEPTION 'rose_monitor does not exist: pass -v password="''...''" to create it'; END $$;
\endif
CREATE ROLE rose_monitor WITH LOGIN PASSWORD :password;
\elif :{?password}
ALTER ROLE rose_monitor WITH PASSWORD :password;
\endif
ALTER ROLE rose_monitor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT;
ALTER ROLE rose_monitor CONNECTION LIMIT 5;
GRANT pg_monitor TO rose_monitor;
GRANT CONNECT ON DATABASE :"dbname" TO rose_monitor;
ALTER ROLE rose_monitor SET default_transaction_read_only = on;
ALTER ROLE rose_monitor SET statement_timeout = '5s';
ALTER ROLE rose_monitor SET lock_timeout = '1s';

-- The migration version, also for a table created later (see above).
CREATE SCHEMA IF NOT EXISTS rose_agent;
REVOKE ALL ON SCHEMA rose_agent FROM PUBLIC;
GRANT USAGE ON SCHEMA rose_agent TO rose_monitor;
CREATE OR REPLACE FUNCTION rose_agent.langgraph_migrations(schema_name text)
RETURNS TABLE (max_version integer, row_count bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF to_regclass(format('%I.%I', schema_name, 'checkpoint_migrations')) IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format('SELECT max(v)::integer, count(*) FROM %I.checkpoint_migrations', schema_name);
END
$fn$;
COMMENT ON FUNCTION rose_agent.langgraph_migrations(text) IS
    'rose-agent: max(v) and count(*) of <schema>.checkpoint_migrations, nothing else (scripts/create-monitoring-role.sql)';
ALTER FUNCTION rose_agent.langgraph_migrations(text) OWNER TO :"app_role";
REVOKE ALL ON FUNCTION rose_agent.langgraph_migrations(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rose_agent.langgraph_migrations(text) TO rose_monitor;

-- What exists already: USAGE on the schema, SELECT on the ten-row table.
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :'schema') AS schema_exists \gset
\if :schema_exists
GRANT USAGE ON SCHEMA :"schema" TO rose_monitor;
\endif
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = :'schema' AND c.relname = 'checkpoint_migrations') AS table_exists \gset
\if :table_exists
GRANT SELECT ON :"schema".checkpoint_migrations TO rose_monitor;
\endif

-- Per-thread checkpoint sizes (check checkpoint_threads), only when asked for: SELECT on the
-- conversations. The agent sends back only counts, sizes and md5 prefixes of thread ids.
\if :{?read_checkpoints}
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = :'schema' AND c.relname = 'checkpoints') AS checkpoints_exist \gset
\if :checkpoints_exist
GRANT SELECT ON :"schema".checkpoints, :"schema".checkpoint_blobs TO rose_monitor;
\else
\echo 'read_checkpoints: LangGraph tables not created yet; run this script again after the app setup()'
\endif
\endif
