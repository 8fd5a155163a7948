//! PostgreSQL metrics (`rose_pg_*`).

metrics! {
    list PG;

    // --- PostgreSQL: connectivity (check `pg_connectivity`) ---
    PG_UP = "rose_pg_up", Gauge, "1", [],
        "1 when the last connectivity check reached PostgreSQL and ran a query, else 0.";
    PG_ROUNDTRIP = "rose_pg_roundtrip_seconds", Gauge, "seconds", [],
        "Network round trip of the last connectivity query on an open connection: the round trip of the cycle's combined statement that carried it, less the server's own time on that statement.";
    PG_CONNECT = "rose_pg_connect_seconds", Gauge, "seconds", [],
        "Duration of the last successful connection set-up (DNS, TCP, TLS, authentication).";
    PG_VERSION_NUM = "rose_pg_server_version_num", Gauge, "1", [],
        "Server version as server_version_num (e.g. 150018).";
    PG_VERSION_INFO = "rose_pg_server_info", Gauge, "1", ["version", "major"],
        "Always 1; labels carry the server version string and major version.";
    PG_START_TIME = "rose_pg_postmaster_start_time_seconds", Gauge, "seconds", [],
        "Unix time the PostgreSQL server started (pg_postmaster_start_time); a change is a restart.";
    PG_IN_RECOVERY = "rose_pg_in_recovery", Gauge, "1", [],
        "1 when the server is a standby in recovery, 0 on a primary.";
    PG_BATCH_PREPARES = "rose_pg_batch_prepares_total", Counter, "1", [],
        "Combined statements this agent prepared on a direct session (parsed and planned once, then executed every cycle; through a pooler none are): it grows when the set of checks in a cycle changes, not with cycles.";
    PG_BATCH_FALLBACKS = "rose_pg_batch_fallbacks_total", Counter, "1", ["reason"],
        "Cycles whose one combined statement failed (reason: error, timeout, decode), so each PostgreSQL check ran its own statement instead; a part that failed alone then runs alone for a few cycles.";

    // --- PostgreSQL: connections (check `pg_connections`) ---
    PG_CONNECTIONS = "rose_pg_connections", Gauge, "1", ["state"],
        "Client backends by state: active, idle, idle_in_transaction, idle_in_transaction_aborted, fastpath_function_call, disabled, unknown.";
    PG_MAX_CONNECTIONS = "rose_pg_max_connections", Gauge, "1", [],
        "The server's max_connections setting.";
    PG_SUPERUSER_RESERVED = "rose_pg_superuser_reserved_connections", Gauge, "1", [],
        "The server's superuser_reserved_connections setting.";

    // --- PostgreSQL: sizes (check `pg_database_size`, slow cadence) ---
    PG_DATABASE_SIZE = "rose_pg_database_size_bytes", Gauge, "bytes", ["datname"],
        "Size of the monitored database (pg_database_size).";
}
