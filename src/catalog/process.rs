//! The standard process series (`process_*`) under the names every Prometheus client library
//! exports, so stock dashboards and alerts work unchanged (check `agent_process`).

metrics! {
    list PROCESS;
    PROCESS_CPU = "process_cpu_seconds_total", Counter, "seconds", [],
        "Total user and system CPU time spent in seconds.";
    PROCESS_RSS = "process_resident_memory_bytes", Gauge, "bytes", [],
        "Resident memory size in bytes.";
    PROCESS_OPEN_FDS = "process_open_fds", Gauge, "1", [],
        "Number of open file descriptors.";
    PROCESS_MAX_FDS = "process_max_fds", Gauge, "1", [],
        "Maximum number of open file descriptors (the soft limit).";
    PROCESS_START_TIME = "process_start_time_seconds", Gauge, "seconds", [],
        "Start time of the process since unix epoch in seconds.";
}
