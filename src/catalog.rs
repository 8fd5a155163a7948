//! The metric catalog: every metric the agent can export (name, type, unit, labels, help), in
//! one list. A [`Sample`] points at a [`MetricDef`] here, so nothing outside the catalog can be
//! emitted; `/metrics`, OTLP and `docs/metrics.md` are all derived from it.
//!
//! Naming: `rose_<subsystem>_<name>_<unit>[_total]`, base units (seconds, bytes), label values
//! from bounded sets (states, error kinds, check ids), never free text.

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric's definition.
#[derive(Debug, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Base unit, for docs and OTLP (`seconds`, `bytes`, `1` for counts and ratios).
    pub unit: &'static str,
    /// Label names, in the order samples give their values.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// A histogram's state: cumulative bucket counts by upper bound, total count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Histogram(HistogramValue),
}

/// One exported series: a catalog entry, its label values (in `def.labels` order), a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub def: &'static MetricDef,
    pub labels: Vec<String>,
    pub value: Value,
}

impl Sample {
    pub fn new(def: &'static MetricDef, labels: &[&str], value: f64) -> Sample {
        debug_assert_eq!(
            def.labels.len(),
            labels.len(),
            "label arity of {}",
            def.name
        );
        Sample {
            def,
            labels: labels.iter().map(|s| (*s).to_owned()).collect(),
            value: Value::Num(value),
        }
    }
    pub fn owned(def: &'static MetricDef, labels: Vec<String>, value: f64) -> Sample {
        debug_assert_eq!(
            def.labels.len(),
            labels.len(),
            "label arity of {}",
            def.name
        );
        Sample {
            def,
            labels,
            value: Value::Num(value),
        }
    }
    pub fn histogram(def: &'static MetricDef, labels: Vec<String>, h: HistogramValue) -> Sample {
        Sample {
            def,
            labels,
            value: Value::Histogram(h),
        }
    }
    /// The numeric value, for gauges and counters.
    pub fn num(&self) -> Option<f64> {
        match self.value {
            Value::Num(v) => Some(v),
            Value::Histogram(_) => None,
        }
    }
}

macro_rules! metrics {
    ($( $(#[$m:meta])* $id:ident = $name:literal, $kind:ident, $unit:literal, [$($l:literal),*], $help:literal; )*) => {
        $( $(#[$m])* pub static $id: MetricDef = MetricDef {
            name: $name, kind: Kind::$kind, unit: $unit, labels: &[$($l),*], help: $help,
        }; )*
        /// Every metric, in documentation order.
        pub static CATALOG: &[&MetricDef] = &[$(&$id),*];
    };
}

metrics! {
    // --- PostgreSQL: connectivity (check `pg_connectivity`) ---
    PG_UP = "rose_pg_up", Gauge, "1", [],
        "1 when the last connectivity check reached PostgreSQL and ran a query, else 0.";
    PG_ROUNDTRIP = "rose_pg_roundtrip_seconds", Gauge, "seconds", [],
        "Duration of the last connectivity query on an open connection (network round trip plus a trivial query).";
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

    // --- the agent itself ---
    AGENT_BUILD_INFO = "rose_agent_build_info", Gauge, "1", ["version"],
        "Always 1; the agent's version.";
    AGENT_START_TIME = "rose_agent_start_time_seconds", Gauge, "seconds", [],
        "Unix time the agent started.";
    AGENT_READY = "rose_agent_ready", Gauge, "1", [],
        "1 once every check has completed at least once (what /readyz reports).";
    AGENT_CHECK_SUCCESS = "rose_agent_check_success", Gauge, "1", ["check"],
        "1 when the check's last run succeeded, else 0.";
    AGENT_CHECK_DURATION = "rose_agent_check_duration_seconds", Gauge, "seconds", ["check"],
        "Duration of the check's last run.";
    AGENT_CHECK_LAST_SUCCESS = "rose_agent_check_last_success_timestamp_seconds", Gauge, "seconds", ["check"],
        "Unix time of the check's last successful run (absent until one succeeds).";
    AGENT_CHECK_RUNS = "rose_agent_check_runs_total", Counter, "1", ["check"],
        "Runs of the check since the agent started.";
    AGENT_CHECK_ERRORS = "rose_agent_check_errors_total", Counter, "1", ["check", "kind"],
        "Failed runs of the check by error kind (a bounded set; see docs/metrics.md).";
    AGENT_PG_CONNECTS = "rose_agent_pg_connection_attempts_total", Counter, "1", ["result"],
        "Connection attempts to PostgreSQL by result (ok, error); backoff keeps errors slow.";
    AGENT_RSS = "rose_agent_resident_memory_bytes", Gauge, "bytes", [],
        "The agent's resident set size.";
    AGENT_CPU = "rose_agent_cpu_seconds_total", Counter, "seconds", [],
        "CPU time the agent has used (user + system).";
    AGENT_OPEN_FDS = "rose_agent_open_fds", Gauge, "1", [],
        "File descriptors the agent holds open.";
}

/// `docs/metrics.md`, generated from the catalog.
pub fn markdown() -> String {
    let mut s = String::from(
        "# Metrics\n\nGenerated from `src/catalog.rs` by `cargo test` (set `UPDATE_DOCS=1` to rewrite); do not edit by hand.\n\n\
         Every series the agent exports comes from this list. Values come from the last completed\n\
         check run held in the snapshot: a scrape never queries the database. A failed check exports\n\
         no stale values: its series disappear and `rose_agent_check_success{check}` drops to 0.\n\n\
         | name | type | unit | labels | help |\n|---|---|---|---|---|\n",
    );
    for d in CATALOG {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            d.name,
            d.kind.as_str(),
            d.unit,
            if d.labels.is_empty() {
                "".to_owned()
            } else {
                d.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            d.help
        ));
    }
    s.push_str(
        "\n## Error kinds\n\nThe `kind` label of `rose_agent_check_errors_total` takes one of:\n\n",
    );
    for k in crate::error::ErrorKind::ALL {
        s.push_str(&format!("- `{}`: {}\n", k.as_str(), k.describe()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOG {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            assert!(d.name.starts_with("rose_"), "{}", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            if d.unit == "seconds" {
                assert!(
                    d.name.ends_with("_seconds") || d.name.ends_with("_seconds_total"),
                    "{}",
                    d.name
                );
            }
            if d.unit == "bytes" {
                assert!(
                    d.name.ends_with("_bytes") || d.name.ends_with("_bytes_total"),
                    "{}",
                    d.name
                );
            }
            assert!(d.help.ends_with('.'), "{}", d.name);
        }
    }
}
