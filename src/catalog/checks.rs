//! The check ids: the `check` label value of every check, written once here. They are
//! vocabulary (label values, `AGENT_DISABLED_CHECKS` names, stable API), so the configuration
//! can validate them without importing the checks; each check's `ID` is its constant here.

/// Declares one `pub const` a check id and [`ALL`], in order.
macro_rules! check_ids {
    ($($(#[$doc:meta])* $name:ident = $id:literal;)+) => {
        $($(#[$doc])* pub const $name: &str = $id;)+
        /// Every check id (app probes aside: theirs are [`APP_PROBE_PREFIX`]`<name>`).
        pub const ALL: &[&str] = &[$($name),+];
    };
}

check_ids! {
    /// The agent's own process: it cannot be disabled.
    AGENT_PROCESS = "agent_process";
    HOST_RESOURCES = "host_resources";
    APP_RECOVERY = "app_recovery";
    SQLITE_CHECKPOINTER = "sqlite_checkpointer";
    CHECKPOINT_MIGRATION = "checkpoint_migration";
    CHECKPOINT_THREADS = "checkpoint_threads";
    PG_CONNECTIVITY = "pg_connectivity";
    PG_CONNECTIONS = "pg_connections";
    PG_CONNECTION_BUDGET = "pg_connection_budget";
    PG_ACTIVITY = "pg_activity";
    PG_STATEMENTS = "pg_statements";
    PG_TABLE_SIZES = "pg_table_sizes";
    PG_SCHEMA = "pg_schema";
    PG_REPLICATION = "pg_replication";
    PG_DATABASE_STATS = "pg_database_stats";
    PG_CHECKPOINTS = "pg_checkpoints";
    PG_ARCHIVER = "pg_archiver";
    PG_PRIVILEGES = "pg_privileges";
    PG_REPLICA = "pg_replica";
    PG_DATABASE_SIZE = "pg_database_size";
}

/// The id prefix of app probe checks (`app_probe_<name>`).
pub const APP_PROBE_PREFIX: &str = "app_probe_";

/// Whether `id` names a check `AGENT_DISABLED_CHECKS` may disable: any check but the agent's
/// own process check, or an app probe.
pub fn disablable(id: &str) -> bool {
    (ALL.contains(&id) && id != AGENT_PROCESS)
        || id
            .strip_prefix(APP_PROBE_PREFIX)
            .is_some_and(|n| !n.is_empty())
}
