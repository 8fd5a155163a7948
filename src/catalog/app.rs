//! App probe metrics (`rose_app_*`): HTTP probes of the Rose app (check `app_probe_<name>`).
//! `endpoint` is the probe's configured name, `service` a name the app reports (capped count).

metrics! {
    list APP;

    APP_PROBE_SUCCESS = "rose_app_probe_success", Gauge, "1", ["endpoint"],
        "1 when the last probe got an answer with the expected HTTP status within its timeout, else 0.";
    APP_PROBE_DURATION = "rose_app_probe_duration_seconds", Histogram, "seconds", ["endpoint"],
        "Duration of every probe since the agent started (connect, request, body; failures included, timeouts at the timeout).";
    APP_PROBE_LAST_DURATION = "rose_app_probe_last_duration_seconds", Gauge, "seconds", ["endpoint"],
        "Duration of the last probe.";
    APP_PROBE_THRESHOLD = "rose_app_probe_latency_threshold_seconds", Gauge, "seconds", ["endpoint"],
        "The probe's configured latency threshold (health 100 ms, voice 2 s, per the migration guide).";
    APP_PROBE_SLOW = "rose_app_probe_slow", Gauge, "1", ["endpoint"],
        "1 when the last probe answered but took longer than its latency threshold, else 0.";
    APP_PROBE_STATUS_CODE = "rose_app_probe_status_code", Gauge, "1", ["endpoint"],
        "HTTP status code of the last probe; 0 when no answer came.";
    APP_RECOVERY = "rose_app_recovery_seconds", Gauge, "seconds", [],
        "After the last PostgreSQL restart the agent saw: seconds from the server's new start until every app probe answered healthy (absent before a restart, and while the app has not recovered).";
    APP_HEALTHY = "rose_app_healthy", Gauge, "1", ["endpoint"],
        "1 when the last probe succeeded and every JSON expectation held (the app reports healthy), 0 when degraded or failing.";
    APP_REPORTED_STATUS = "rose_app_reported_status", Gauge, "1", ["endpoint", "status"],
        "Always 1 while the app's body carries a status: healthy, degraded or other (absent without a body).";
    APP_EXPECTATIONS_FAILED = "rose_app_probe_expectations_failed", Gauge, "1", ["endpoint"],
        "JSON expectations of the last probe that did not hold (0 when all held; absent without a body).";
    APP_PROBE_FAILURES = "rose_app_probe_failures_total", Counter, "1", ["endpoint", "reason"],
        "Failed probes by reason: refused, connect_timeout, timeout, dns, tls, closed, status, body_too_large, body_invalid, token, other.";
    APP_PROBE_PATH = "rose_app_probe_path_info", Gauge, "1", ["endpoint", "path"],
        "Always 1; the configured path (or fallback path) the last answer came from.";
    APP_SERVICE_UP = "rose_app_service_up", Gauge, "1", ["service"],
        "1 when the app's health body reports the service connected, 0 otherwise (names as the app sends them, at most 16).";
    APP_SERVICES_DROPPED = "rose_app_services_dropped", Gauge, "1", [],
        "Services in the app's health body beyond the 16 exported (or with unusable names).";
    APP_VERSION_INFO = "rose_app_version_info", Gauge, "1", ["endpoint", "version"],
        "Always 1; the version the app's health body reports (sanitized, at most 32 characters).";
}
