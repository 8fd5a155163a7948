//! App probes end to end: the agent binary probing the real stand-in app (`rose-standin`) on
//! loopback, switched between healthy, degraded, slow, 500, refusing and hanging through its
//! control port. Nothing is mocked.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn agent_for(app: &Standin) -> Agent {
    Agent::start(&[
        ("APP_BASE_URL", app.base_url()),
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_APP_PROBE_INTERVAL", "1s".into()),
        ("AGENT_APP_PROBE_TIMEOUT", "400ms".into()),
    ])
}

/// A scrape that answers well within a second (it reads only the snapshot).
fn prompt(agent: &Agent) -> Metrics {
    let t = Instant::now();
    let m = agent.metrics();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "scrape took {:?}",
        t.elapsed()
    );
    m
}

/// Waits (bounded) until the metrics satisfy `f`; returns them.
fn until(agent: &Agent, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = Metrics::default();
    let ok = wait_for(Duration::from_secs(10), || {
        last = prompt(agent);
        f(&last)
    });
    assert!(
        ok.is_some(),
        "{what}: not seen in 10 s\n{:#?}\n{}",
        last.0
            .iter()
            .filter(|(k, _)| k.starts_with("rose_app"))
            .collect::<Vec<_>>(),
        agent.output()
    );
    last
}

const SUCCESS: &str = r#"rose_app_probe_success{endpoint="health"}"#;
const HEALTHY: &str = r#"rose_app_healthy{endpoint="health"}"#;
const CODE: &str = r#"rose_app_probe_status_code{endpoint="health"}"#;
const SLOW: &str = r#"rose_app_probe_slow{endpoint="health"}"#;
const LAST: &str = r#"rose_app_probe_last_duration_seconds{endpoint="health"}"#;
const COUNT: &str = r#"rose_app_probe_duration_seconds_count{endpoint="health"}"#;

fn service(name: &str) -> String {
    format!(r#"rose_app_service_up{{service="{name}"}}"#)
}

fn failures(reason: &str) -> String {
    format!(r#"rose_app_probe_failures_total{{endpoint="health",reason="{reason}"}}"#)
}

#[test]
fn healthy_app_reports_every_service_up() {
    let app = Standin::start(&[]);
    let agent = agent_for(&app);
    let m = until(&agent, "healthy", |m| m.get(HEALTHY) == Some(1.0));
    assert_eq!(m.get(SUCCESS), Some(1.0));
    assert_eq!(m.get(CODE), Some(200.0));
    for s in ["groq", "qdrant", "elevenlabs", "sqlite"] {
        assert_eq!(m.get(&service(s)), Some(1.0), "{s}");
    }
    assert_eq!(
        m.get(r#"rose_app_reported_status{endpoint="health",status="healthy"}"#),
        Some(1.0)
    );
    assert_eq!(
        m.get(r#"rose_app_probe_path_info{endpoint="health",path="/api/health"}"#),
        Some(1.0)
    );
    assert_eq!(
        m.get(r#"rose_app_probe_latency_threshold_seconds{endpoint="health"}"#),
        Some(0.1)
    );
    assert_eq!(
        m.get(r#"rose_app_version_info{endpoint="health",version="1.0.0"}"#),
        Some(1.0)
    );
    // The histogram accumulates across runs.
    let m = until(&agent, "three probes", |m| m.get(COUNT) >= Some(3.0));
    let inf = m
        .get(r#"rose_app_probe_duration_seconds_bucket{endpoint="health",le="+Inf"}"#)
        .unwrap();
    assert_eq!(Some(inf), m.get(COUNT));
    assert_eq!(
        m.get(r#"rose_agent_check_success{check="app_probe_health"}"#),
        Some(1.0)
    );
    // The host check runs beside it.
    assert!(m.get("rose_host_memory_total_bytes").unwrap_or(0.0) > 0.0);
    assert!(m.get(r#"rose_host_load_average{window="1m"}"#).is_some());
    assert!(
        m.0.keys()
            .any(|k| k.starts_with("rose_host_disk_total_bytes{mount=")),
        "{m:?}"
    );
}

#[test]
fn degraded_with_one_service_down_shows_which() {
    let app = Standin::start(&[]);
    let agent = agent_for(&app);
    until(&agent, "healthy first", |m| m.get(HEALTHY) == Some(1.0));
    app.set("mode=degraded&down=elevenlabs");
    let m = until(&agent, "degraded", |m| m.get(HEALTHY) == Some(0.0));
    // HTTP 200 and a readable body: the probe succeeded, the app is not healthy.
    assert_eq!(m.get(SUCCESS), Some(1.0));
    assert_eq!(m.get(CODE), Some(200.0));
    assert_eq!(m.get(&service("elevenlabs")), Some(0.0));
    for s in ["groq", "qdrant", "sqlite"] {
        assert_eq!(m.get(&service(s)), Some(1.0), "{s}");
    }
    assert_eq!(
        m.get(r#"rose_app_reported_status{endpoint="health",status="degraded"}"#),
        Some(1.0)
    );
    assert_eq!(
        m.get(r#"rose_app_reported_status{endpoint="health",status="healthy"}"#),
        None,
        "no stale status"
    );
    assert_eq!(
        m.get(r#"rose_app_probe_expectations_failed{endpoint="health"}"#),
        Some(2.0)
    );
}

#[test]
fn slow_answer_beyond_the_threshold_is_flagged() {
    let app = Standin::start(&["--mode", "slow", "--delay-ms", "250"]);
    let agent = agent_for(&app);
    let m = until(&agent, "slow", |m| m.get(SLOW) == Some(1.0));
    assert!(m.get(LAST).unwrap() >= 0.25, "{m:?}");
    // Slow but answering and healthy.
    assert_eq!(m.get(SUCCESS), Some(1.0));
    assert_eq!(m.get(HEALTHY), Some(1.0));
    let fast = m
        .get(r#"rose_app_probe_duration_seconds_bucket{endpoint="health",le="0.1"}"#)
        .unwrap();
    assert!(fast < m.get(COUNT).unwrap(), "{m:?}");
    app.set("mode=healthy");
    until(&agent, "fast again", |m| m.get(SLOW) == Some(0.0));
}

#[test]
fn http_500_fails_the_probe() {
    let app = Standin::start(&[]);
    let agent = agent_for(&app);
    until(&agent, "healthy first", |m| m.get(HEALTHY) == Some(1.0));
    app.set("mode=500");
    let m = until(&agent, "500", |m| m.get(CODE) == Some(500.0));
    assert_eq!(m.get(SUCCESS), Some(0.0));
    assert_eq!(m.get(HEALTHY), Some(0.0));
    assert!(m.get(&failures("status")) >= Some(1.0), "{m:?}");
    assert_eq!(m.get(&service("groq")), None, "no stale service values");
}

#[test]
fn connection_refused_then_recovered() {
    let app = Standin::start(&[]);
    let agent = agent_for(&app);
    until(&agent, "healthy first", |m| m.get(HEALTHY) == Some(1.0));
    app.set("mode=refusing");
    let m = until(&agent, "refused", |m| {
        m.get(&failures("refused")) >= Some(1.0) && m.get(SUCCESS) == Some(0.0)
    });
    assert_eq!(m.get(CODE), Some(0.0));
    assert_eq!(m.get(HEALTHY), Some(0.0));
    assert_eq!(m.get(SLOW), Some(0.0));
    app.set("mode=healthy");
    until(&agent, "recovered", |m| m.get(HEALTHY) == Some(1.0));
}

#[test]
fn hanging_app_times_out_and_metrics_stay_prompt() {
    let app = Standin::start(&[]);
    let agent = agent_for(&app);
    until(&agent, "healthy first", |m| m.get(HEALTHY) == Some(1.0));
    app.set("mode=hanging");
    let m = until(&agent, "timeout", |m| {
        m.get(&failures("timeout")) >= Some(1.0)
    });
    assert_eq!(m.get(SUCCESS), Some(0.0));
    assert_eq!(m.get(CODE), Some(0.0));
    // Ended at its 400 ms timeout, not later.
    let last = m.get(LAST).unwrap();
    assert!((0.38..1.0).contains(&last), "last duration {last}");
    // The agent keeps serving /metrics promptly while every probe hangs.
    for _ in 0..20 {
        prompt(&agent);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.get("/healthz").0, 200);
    assert!(!agent.output().contains("panicked"), "{}", agent.output());
}

#[test]
fn newer_builds_are_found_at_the_fallback_path() {
    let app = Standin::start(&["--serve", "v1"]);
    let agent = agent_for(&app);
    let m = until(&agent, "fallback", |m| m.get(HEALTHY) == Some(1.0));
    assert_eq!(
        m.get(r#"rose_app_probe_path_info{endpoint="health",path="/api/v1/health"}"#),
        Some(1.0)
    );
}

#[test]
fn probes_from_the_file_with_a_bearer_token_never_show_it() {
    let app = Standin::start(&[]);
    // The stand-in now answers 401 without the token.
    app.set("bearer=Tok-9f8e7d-secret");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "Tok-9f8e7d-secret\n").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[app]
base_url = "{base}"

[[app.probes]]
name = "v1_health"
path = "/api/v1/health"
interval = "1s"
timeout = "400ms"
bearer_token_file = "{token}"
report_services = true
headers = {{ "X-Api-Key" = "Hdr-5a4b3c-secret" }}

[[app.probes.expect]]
field = "services.qdrant"
equals = "connected"
"#,
            base = app.base_url(),
            token = token.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&[
        ("AGENT_CONFIG", cfg.display().to_string()),
        ("AGENT_INTERVAL", "1s".into()),
    ]);
    let ep = r#"rose_app_healthy{endpoint="v1_health"}"#;
    until(&agent, "file probe healthy", |m| m.get(ep) == Some(1.0));
    app.set("mode=degraded&down=qdrant");
    until(&agent, "qdrant down", |m| m.get(ep) == Some(0.0));
    app.set("mode=degraded&down=groq");
    // Only services.qdrant is expected: groq down keeps this probe healthy.
    until(&agent, "groq down is fine", |m| m.get(ep) == Some(1.0));
    let (_, metrics) = agent.get("/metrics");
    let printed = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["run", "--print-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(printed.contains("v1_health"), "{printed}");
    for text in [&metrics, &agent.output(), &printed] {
        assert!(!text.contains("Tok-9f8e7d"), "token leaked: {text}");
        assert!(!text.contains("Hdr-5a4b3c"), "header leaked: {text}");
    }
}

#[test]
fn garbage_and_huge_bodies_fail_without_harm() {
    let app = Standin::start(&[]);
    let agent = agent_for(&app);
    until(&agent, "healthy first", |m| m.get(HEALTHY) == Some(1.0));
    app.set("mode=garbage");
    let m = until(&agent, "garbage", |m| {
        m.get(&failures("body_invalid")) >= Some(1.0)
    });
    assert_eq!(m.get(SUCCESS), Some(0.0));
    assert_eq!(m.get(HEALTHY), Some(0.0));
    app.set("mode=huge");
    let m = until(&agent, "huge", |m| {
        m.get(&failures("body_too_large")) >= Some(1.0)
    });
    assert_eq!(m.get(HEALTHY), Some(0.0));
    assert_eq!(m.get(CODE), Some(200.0));
    app.set("mode=healthy");
    until(&agent, "recovered", |m| m.get(HEALTHY) == Some(1.0));
    assert!(!agent.output().contains("panicked"), "{}", agent.output());
}

#[test]
fn https_probe_verifies_with_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(dir.path()) else {
        return;
    };
    let app = Standin::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[[app.probes]]
name = "tls_trusted"
url = "https://127.0.0.1:{port}/api/health"
interval = "1s"
timeout = "400ms"
ca_file = "{ca}"

[[app.probes]]
name = "tls_untrusted"
url = "https://127.0.0.1:{port}/api/v1/health"
interval = "1s"
timeout = "400ms"
"#,
            port = app.port
        ),
    )
    .unwrap();
    let agent = Agent::start(&[
        ("AGENT_CONFIG", cfg.display().to_string()),
        ("AGENT_INTERVAL", "1s".into()),
    ]);
    let m = until(&agent, "tls", |m| {
        m.get(r#"rose_app_healthy{endpoint="tls_trusted"}"#) == Some(1.0)
            && m.get(r#"rose_app_probe_failures_total{endpoint="tls_untrusted",reason="tls"}"#)
                >= Some(1.0)
    });
    assert_eq!(
        m.get(r#"rose_app_probe_success{endpoint="tls_untrusted"}"#),
        Some(0.0)
    );
}
