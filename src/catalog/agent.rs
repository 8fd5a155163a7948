//! The agent's own metrics (`rose_agent_*`).

metrics! {
    list AGENT;
    // --- the agent itself ---
    AGENT_BUILD_INFO = "rose_agent_build_info", Gauge, "1", ["version", "revision", "rustc", "target"],
        "Always 1; the agent's version, git revision, the rustc that built it and its target triple.";
    AGENT_START_TIME = "rose_agent_start_time_seconds", Gauge, "seconds", [],
        "Unix time the agent started.";
    AGENT_READY = "rose_agent_ready", Gauge, "1", [],
        "1 once every check has completed at least once (what /readyz reports).";
    AGENT_CHECK_SUCCESS = "rose_agent_check_success", Gauge, "1", ["check"],
        "1 when the check's last run succeeded and is still current, else 0.";
    AGENT_CHECK_STALE = "rose_agent_check_stale", Gauge, "1", ["check"],
        "1 when the check's last outcome is older than its freshness bound (interval + timeout + slack): its series are withheld and its failure series (e.g. rose_pg_up 0) served instead.";
    AGENT_SNAPSHOT_AGE = "rose_agent_snapshot_age_seconds", Gauge, "seconds", [],
        "Seconds since the newest check outcome was recorded, at the time of the scrape (absent before the first).";
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
    AGENT_LEADER = "rose_agent_leader", Gauge, "1", [],
        "1 on the agent of a fleet that holds the PostgreSQL advisory lock and runs the database-wide checks, else 0 (absent without PostgreSQL).";
    AGENT_RSS = "rose_agent_resident_memory_bytes", Gauge, "bytes", [],
        "The agent's resident set size.";
    AGENT_CPU = "rose_agent_cpu_seconds_total", Counter, "seconds", [],
        "CPU time the agent has used (user + system).";
    AGENT_OPEN_FDS = "rose_agent_open_fds", Gauge, "1", [],
        "File descriptors the agent holds open.";
    AGENT_AM_POSTS = "rose_agent_alertmanager_posts_total", Counter, "1", ["result"],
        "Posts of active/resolved findings to Alertmanager (AGENT_ALERTMANAGER_URL) by result (ok, error).";
    AGENT_TARGET_INFO = "rose_agent_target_info", Gauge, "1", ["rose_target"],
        "Always 1 (absent without a DSN); rose_target is the sanitized database target (host:port/dbname): the identity label RosePostgresDown, RoseFinding and pushed alerts share, so one database's outage is one page (docs/alerting.md).";
    AGENT_AM_ALERTS = "rose_agent_alertmanager_alerts", Gauge, "1", [],
        "Findings the agent currently pushes to Alertmanager as firing.";
    AGENT_OTLP_DROPPED = "rose_agent_otlp_dropped_total", Counter, "1", ["signal"],
        "Spans (signal=traces) or metric streams (signal=metrics) dropped because an OTLP export failed.";
    AGENT_OTLP_EXPORTS = "rose_agent_otlp_exports_total", Counter, "1", [],
        "Successful OTLP exports (both signals).";
}
