//! PostgreSQL metrics of the guide's checks (`rose_pg_*`): connections by application and user,
//! the connection budget, activity, pg_stat_statements, sizes, the LangGraph schema, replication,
//! database health and the monitoring role's capabilities.

metrics! {
    list PG_CHECKS;

    // --- connections (check `pg_connections`) ---
    PG_CONNECTIONS_BY_APP = "rose_pg_connections_by_application", Gauge, "1", ["application"],
        "Client backends by application_name: the top N (AGENT_LABELS_TOP_N) by count, the rest summed as `other`; `unset` when empty.";
    PG_CONNECTIONS_BY_USER = "rose_pg_connections_by_user", Gauge, "1", ["user"],
        "Client backends by role: the top N (AGENT_LABELS_TOP_N) by count, the rest summed as `other`.";
    PG_LOCK_WAITS = "rose_pg_connections_waiting_on_locks", Gauge, "1", [],
        "Client backends waiting on a heavyweight lock (wait_event_type = Lock).";
    PG_RESERVED = "rose_pg_reserved_connections", Gauge, "1", [],
        "The server's reserved_connections setting (PostgreSQL 16+; absent before).";
    PG_CONNECTION_SLOTS = "rose_pg_connection_slots", Gauge, "1", [],
        "Slots ordinary roles can use: max_connections - superuser_reserved_connections - reserved_connections.";
    PG_CONNECTION_UTILIZATION = "rose_pg_connection_utilization_ratio", Gauge, "1", [],
        "Client backends divided by rose_pg_connection_slots (1 means the next ordinary login is refused).";

    // --- connection budget (check `pg_connection_budget`) ---
    PG_BUDGET_DEMAND = "rose_pg_connection_budget_demand", Gauge, "1", [],
        "Worst-case connections the app can open: instances x (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW) + 1 for the agent.";
    PG_BUDGET_SLOTS = "rose_pg_connection_budget_slots", Gauge, "1", [],
        "Connection slots the budget is measured against (plan preset or AGENT_MAX_CONNECTIONS if set, else the server), minus reserved slots.";
    PG_BUDGET_HEADROOM = "rose_pg_connection_budget_headroom", Gauge, "1", [],
        "Budget slots minus demand; negative means the app can be refused with 'too many connections' at peak.";
    PG_APP_INSTANCES_OBSERVED = "rose_pg_app_instances_observed", Gauge, "1", [],
        "Client addresses with sessions on the database other than agents': the app instances the database sees.";
    PG_APP_INSTANCES_CONFIGURED = "rose_pg_app_instances_configured", Gauge, "1", [],
        "AGENT_APP_INSTANCES; the connection budget uses the larger of this and the observed count.";

    // --- activity (check `pg_activity`) ---
    PG_ACTIVE_QUERY_MAX = "rose_pg_active_query_max_seconds", Gauge, "seconds", [],
        "Age of the longest-running active query of a client backend (0 when none).";
    PG_SLOW_QUERIES = "rose_pg_slow_queries", Gauge, "1", [],
        "Active queries running longer than the threshold (AGENT_SLOW_QUERY_THRESHOLD, default 2s).";
    PG_SLOW_QUERY_THRESHOLD = "rose_pg_slow_query_threshold_seconds", Gauge, "seconds", [],
        "The threshold rose_pg_slow_queries counts against.";
    PG_TRANSACTION_MAX = "rose_pg_transaction_max_seconds", Gauge, "seconds", [],
        "Age of the oldest open transaction of a client backend (0 when none).";
    PG_IDLE_IN_TX_MAX = "rose_pg_idle_in_transaction_max_seconds", Gauge, "seconds", [],
        "Longest time a client backend has sat idle in transaction (0 when none).";
    PG_IDLE_IN_TX = "rose_pg_idle_in_transaction_sessions", Gauge, "1", [],
        "Client backends idle in transaction (including aborted).";
    PG_BLOCKED = "rose_pg_blocked_sessions", Gauge, "1", [],
        "Client backends blocked by another session's lock (pg_blocking_pids non-empty).";
    PG_BLOCKERS = "rose_pg_blocking_sessions", Gauge, "1", [],
        "Distinct sessions that block at least one other session.";

    // --- pg_stat_statements (check `pg_statements`, slow cadence) ---
    PG_STATEMENTS_AVAILABLE = "rose_pg_statements_available", Gauge, "1", [],
        "1 when pg_stat_statements is installed in the database, loaded and readable; 0 otherwise (see the check's observation for why).";
    PG_STATEMENTS_TRACKED = "rose_pg_statements_tracked", Gauge, "1", [],
        "Distinct statements (queryid) pg_stat_statements tracks for this database.";
    PG_STATEMENTS_CALLS = "rose_pg_statements_calls_total", Counter, "1", [],
        "Calls of all tracked statements of this database.";
    PG_STATEMENTS_TIME = "rose_pg_statements_exec_seconds_total", Counter, "seconds", [],
        "Execution time of all tracked statements of this database.";
    PG_STATEMENT_CALLS = "rose_pg_statement_calls_total", Counter, "1", ["queryid"],
        "Calls of one statement; only the top N (AGENT_STATEMENTS_TOP_N) by total and by mean time get a series.";
    PG_STATEMENT_TIME = "rose_pg_statement_exec_seconds_total", Counter, "seconds", ["queryid"],
        "Total execution time of one top-N statement.";
    PG_STATEMENT_MEAN = "rose_pg_statement_mean_seconds", Gauge, "seconds", ["queryid"],
        "Mean execution time of one top-N statement.";
    PG_STATEMENT_ROWS = "rose_pg_statement_rows_total", Counter, "1", ["queryid"],
        "Rows returned or affected by one top-N statement.";

    // --- sizes (checks `pg_database_size`, `pg_table_sizes`, slow cadence) ---
    PG_DATABASE_GROWTH = "rose_pg_database_growth_bytes_per_second", Gauge, "bytes_per_second", ["datname"],
        "Growth of the database size per second (averaged over up to the last hour), from the agent's own history of rose_pg_database_size_bytes (absent until two samples exist).";
    PG_STORAGE_LIMIT = "rose_pg_storage_limit_bytes", Gauge, "bytes", ["datname"],
        "Storage limit of the database's plan (AGENT_PLAN: starter 1 GB, pro 10 GB; or AGENT_STORAGE_LIMIT); absent when none is configured.";
    PG_STORAGE_FULL = "rose_pg_storage_full_seconds", Gauge, "seconds", ["datname"],
        "Estimated time until the database reaches its storage limit at the observed growth (rose_pg_database_growth_bytes_per_second); 0 when at or over it, absent without a limit or without growth.";
    PG_TABLE_SIZE = "rose_pg_table_size_bytes", Gauge, "bytes", ["table", "part"],
        "Size of a watched table (LangGraph's and the expectations file's): part is table (heap + TOAST) or indexes; sum by (table) is its total.";
    PG_TABLE_ROWS = "rose_pg_table_estimated_rows", Gauge, "1", ["table"],
        "Planner estimate of a watched table's rows (pg_class.reltuples; absent before the first ANALYZE).";
    PG_TABLE_GROWTH = "rose_pg_table_growth_bytes_per_second", Gauge, "bytes_per_second", ["table"],
        "Growth of a watched table's total size per second (averaged over up to the last hour), from the agent's own history.";

    // --- schema expectations (check `pg_schema`) ---
    PG_SCHEMA_PRESENT = "rose_pg_schema_object_present", Gauge, "1", ["kind", "name"],
        "1 when an expected table, column (`table.column`) or index exists (an index also valid and on the right table and columns), else 0.";
    PG_SCHEMA_MIGRATION_VERSION = "rose_pg_schema_migration_version", Gauge, "1", [],
        "max(v) of LangGraph's checkpoint_migrations (-1 when empty; absent when the table is missing or unreadable).";
    PG_SCHEMA_MIGRATION_ROWS = "rose_pg_schema_migration_rows", Gauge, "1", [],
        "Rows of LangGraph's checkpoint_migrations (a fully migrated schema has expected + 1).";
    PG_SCHEMA_MIGRATION_EXPECTED = "rose_pg_schema_migration_expected", Gauge, "1", [],
        "The latest migration LangGraph's saver applies: 9 for PostgresSaver, 7 for the shallow variant.";
    PG_SCHEMA_VARIANT = "rose_pg_schema_variant_info", Gauge, "1", ["variant"],
        "Always 1; the detected LangGraph schema variant: full, shallow or unknown.";
    PG_SCHEMA_INVALID_INDEXES = "rose_pg_schema_invalid_indexes", Gauge, "1", [],
        "Invalid or not-ready indexes on watched tables (e.g. left by a failed CREATE INDEX CONCURRENTLY).";
    PG_SCHEMA_DUPLICATE_INDEXES = "rose_pg_schema_duplicate_indexes", Gauge, "1", [],
        "Indexes on watched tables that duplicate another index's definition (same method, keys, operator classes, expressions and predicate).";

    // --- server (check `pg_connectivity`) ---
    PG_RESTARTS = "rose_pg_restarts_observed_total", Counter, "1", [],
        "Server restarts the agent has seen since it started (pg_postmaster_start_time changed).";

    // --- read replica (check `pg_replica`) ---
    PG_REPLICA_UP = "rose_pg_replica_up", Gauge, "1", [],
        "1 when the read replica (DATABASE_READ_REPLICA_URL) answered a query, else 0.";
    PG_REPLICA_IN_RECOVERY = "rose_pg_replica_in_recovery", Gauge, "1", [],
        "1 when the read replica is in recovery (a standby), 0 when it is a primary (promoted or misconfigured).";
    PG_REPLICA_LAG = "rose_pg_replica_lag_seconds", Gauge, "seconds", [],
        "Replay lag of the read replica: 0 when everything received is replayed, else the age of the last replayed transaction.";
    PG_REPLICA_LAG_BYTES = "rose_pg_replica_lag_bytes", Gauge, "bytes", [],
        "WAL the read replica has received but not replayed yet.";
    PG_REPLICA_PAUSED = "rose_pg_replica_replay_paused", Gauge, "1", [],
        "1 when WAL replay on the read replica is paused.";

    // --- replication on the primary (check `pg_replication`) ---
    PG_REPLICATION_STANDBYS = "rose_pg_replication_standbys", Gauge, "1", [],
        "Standbys connected to this server (rows of pg_stat_replication).";
    PG_REPLICATION_STANDBYS_LOST = "rose_pg_replication_standbys_lost", Gauge, "1", [],
        "Standbys that streamed from this server while the agent watched and are gone now (remembered for 24 h or until the agent restarts).";
    PG_REPLICATION_LAG_BYTES = "rose_pg_replication_lag_bytes", Gauge, "bytes", ["standby"],
        "WAL written on this server that a standby has not replayed yet.";
    PG_REPLICATION_LAG = "rose_pg_replication_replay_lag_seconds", Gauge, "seconds", ["standby"],
        "pg_stat_replication.replay_lag of a standby (0 when it has replayed everything).";

    // --- database health (checks `pg_database_stats`, `pg_checkpoints`, `pg_archiver`) ---
    PG_CACHE_HIT = "rose_pg_cache_hit_ratio", Gauge, "1", [],
        "blks_hit / (blks_hit + blks_read) of this database since its statistics were reset.";
    PG_BLOCKS = "rose_pg_blocks_total", Counter, "1", ["source"],
        "Blocks this database needed, by source: cache (shared buffers) or read (from the OS).";
    PG_TRANSACTIONS = "rose_pg_transactions_total", Counter, "1", ["result"],
        "Transactions of this database by result: commit or rollback.";
    PG_DEADLOCKS = "rose_pg_deadlocks_total", Counter, "1", [],
        "Deadlocks detected in this database.";
    PG_TEMP_BYTES = "rose_pg_temp_bytes_total", Counter, "bytes", [],
        "Bytes written to temporary files by queries of this database.";
    PG_TEMP_FILES = "rose_pg_temp_files_total", Counter, "1", [],
        "Temporary files created by queries of this database.";
    PG_XID_AGE = "rose_pg_xid_age", Gauge, "1", [],
        "Transaction ID age of the oldest unfrozen XID of any database (age(datfrozenxid)).";
    PG_XID_WRAPAROUND = "rose_pg_xid_wraparound_ratio", Gauge, "1", [],
        "rose_pg_xid_age / 2^31: how far the cluster is towards transaction ID wraparound.";
    PG_CHECKPOINTS = "rose_pg_checkpoints_total", Counter, "1", ["kind"],
        "Checkpoints by kind: timed or requested (pg_stat_checkpointer on 17+, pg_stat_bgwriter before).";
    PG_CHECKPOINT_WRITE = "rose_pg_checkpoint_write_seconds_total", Counter, "seconds", [],
        "Time checkpoints spent writing files.";
    PG_CHECKPOINT_SYNC = "rose_pg_checkpoint_sync_seconds_total", Counter, "seconds", [],
        "Time checkpoints spent syncing files.";
    PG_CHECKPOINT_BUFFERS = "rose_pg_checkpoint_buffers_written_total", Counter, "1", [],
        "Buffers written by checkpoints.";
    PG_ARCHIVE_ENABLED = "rose_pg_wal_archive_enabled", Gauge, "1", [],
        "1 when archive_mode is on or always.";
    PG_ARCHIVED = "rose_pg_wal_archived_total", Counter, "1", [],
        "WAL files archived successfully.";
    PG_ARCHIVE_FAILED = "rose_pg_wal_archive_failures_total", Counter, "1", [],
        "Failed attempts to archive a WAL file.";
    PG_ARCHIVE_LAST_FAILURE = "rose_pg_wal_archive_last_failure_timestamp_seconds", Gauge, "seconds", [],
        "Unix time of the last failed archive attempt (absent when none).";
    PG_ARCHIVE_LAST_SUCCESS = "rose_pg_wal_archive_last_success_timestamp_seconds", Gauge, "seconds", [],
        "Unix time of the last successful archive (absent when none).";

    // --- privileges (check `pg_privileges`) ---
    PG_CAPABILITY = "rose_pg_capability", Gauge, "1", ["capability"],
        "1 when the monitoring role has the capability (pg_monitor, read_all_stats, read_all_settings, migrations_readable, pg_stat_statements), else 0; the observation carries the grant that fixes it.";
}
