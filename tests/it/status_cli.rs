//! `agent status` and `agent healthcheck` against a running agent with HTTPS, basic auth and a
//! bearer token on a non-default loopback address (127.0.0.3, a random port): both follow the
//! configuration (AGENT_LISTEN, AGENT_WEB_CONFIG_FILE) like `agent run`, `status` prints the
//! status page's summary with Nagios exit codes, and `/`, `/status` stay behind the credentials.

use crate::support;

use std::process::{Command, Output};
use std::time::Duration;

use support::*;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The protected agent and what a client needs to reach it.
struct Secured {
    _dir: tempfile::TempDir,
    child: KillOnDrop,
    /// AGENT_LISTEN and AGENT_WEB_CONFIG_FILE, as the agent runs with.
    env: Vec<(&'static str, String)>,
    /// A web config with the same TLS but no token (a client without credentials).
    tls_only: String,
    addr: String,
}

fn start(pg: &PgCluster) -> Option<Secured> {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = make_certs(dir.path())?;
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-Zq7-status\n").unwrap();
    let hash = bcrypt::hash("scrape-pw", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  prometheus: '{hash}'\nbearer_token_file: {}\n",
            token.display()
        ),
    )
    .unwrap();
    let tls_only = dir.path().join("tls-only.yml");
    std::fs::write(
        &tls_only,
        format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"),
    )
    .unwrap();
    // Not the default address: 127.0.0.3 (loopback) and a free port.
    let addr = format!("127.0.0.3:{}", free_port());
    let env = vec![
        ("AGENT_LISTEN", addr.clone()),
        ("AGENT_WEB_CONFIG_FILE", web.display().to_string()),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(fast_env(pg.monitor_url()))
        .env("AGENT_APP_PROBES", "off")
        .env("FEATURE_DATABASE_TYPE", "postgresql")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    Some(Secured {
        child: KillOnDrop(child),
        env,
        tls_only: tls_only.display().to_string(),
        addr,
        _dir: dir,
    })
}

fn agent(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_and_healthcheck_follow_the_configuration_with_tls_and_auth() {
    let pg = PgCluster::start();
    let Some(s) = start(&pg) else {
        return;
    };
    let _ = &s.child;

    // healthcheck: the configured address, over HTTPS; no --addr needed.
    wait_for(Duration::from_secs(15), || {
        agent(&["healthcheck", "--timeout", "2s"], &s.env).0 == 0
    })
    .unwrap_or_else(|| {
        panic!(
            "healthcheck never passed: {:?}",
            agent(&["healthcheck"], &s.env)
        )
    });
    // Speaking plain HTTP to the TLS listener (what it did before) fails, and says where.
    let plain = [("AGENT_LISTEN", s.addr.clone())];
    let (code, _, err) = agent(&["healthcheck", "--timeout", "2s"], &plain);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("http://{}/healthz", s.addr)), "{err}");
    // Nothing listens at the default address.
    assert_eq!(agent(&["healthcheck", "--timeout", "1s"], &[]).0, 1);

    // status with the web config's bearer token: waits out the first evaluation (unknown, 3),
    // then ok (0): a fresh cluster has only an informational finding.
    let mut last = (0, String::new(), String::new());
    wait_for(Duration::from_secs(20), || {
        last = agent(&["status", "--format", "json"], &s.env);
        last.0 == 0
    })
    .unwrap_or_else(|| panic!("status never ok: {last:?}"));
    let json: serde_json::Value = serde_json::from_str(&last.1).unwrap();
    assert_eq!(json["status"], "ok", "{json}");
    assert!(
        json["agent"]["target"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}/rose", pg.port)),
        "{json}"
    );
    assert!(json["checks"].as_array().unwrap().len() > 5, "{json}");

    // The text for a terminal (no colour into a pipe).
    let (code, text, _) = agent(&["status"], &s.env);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK  "), "{text}");
    assert!(
        text.contains("Checks\n") && text.contains("pg_connectivity"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "colour in a pipe: {text}");
    assert!(!text.contains(MONITOR_PASSWORD), "{text}");

    // A basic-auth user, its password from the environment.
    let mut basic = s.env.clone();
    basic.push(("AGENT_STATUS_PASSWORD", "scrape-pw".into()));
    assert_eq!(agent(&["status", "--user", "prometheus"], &basic).0, 0);
    let mut wrong = s.env.clone();
    wrong.push(("AGENT_STATUS_PASSWORD", "nope".into()));
    let (code, out, _) = agent(&["status", "--user", "prometheus"], &wrong);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with("UNKNOWN") && out.contains("credentials"),
        "{out}"
    );

    // Without credentials, the page and its summary are refused like /metrics.
    let anon = [
        ("AGENT_LISTEN", s.addr.clone()),
        ("AGENT_WEB_CONFIG_FILE", s.tls_only.clone()),
    ];
    let (code, out, _) = agent(&["status"], &anon);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("answered 401"), "{out}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rose_agent::config::Config::load(
        None,
        &std::collections::HashMap::from(anon.clone().map(|(k, v)| (k.to_owned(), v))),
    )
    .unwrap();
    let ep = rose_agent::status::client::Endpoint::from_config(&config, None, &Default::default())
        .unwrap();
    assert!(ep.is_tls());
    let page = ep.get("/", Duration::from_secs(5)).unwrap();
    assert_eq!(page.status, 401);

    // One start-up line says what is watched and how the endpoint is reached.
    let logs = ["out", "err"]
        .map(|f| std::fs::read_to_string(s._dir.path().join(f)).unwrap_or_default())
        .concat();
    let started = logs
        .lines()
        .find(|l| l.contains("Agent started"))
        .unwrap_or_else(|| panic!("no start-up line: {logs}"));
    for field in [
        format!("version={}", env!("CARGO_PKG_VERSION")),
        format!("target_db=127.0.0.1:{}/rose", pg.port),
        "feature_database_type=postgresql".into(),
        "app_url=http://127.0.0.1:8080".into(),
        "pg_sslmode=".into(),
        "endpoint_tls=true".into(),
    ] {
        assert!(started.contains(&field), "{field} not in: {started}");
    }
    assert!(!logs.contains(MONITOR_PASSWORD), "{logs}");

    // The database stops: critical, exit 2, with the finding and its steps.
    pg.stop();
    wait_for(Duration::from_secs(10), || {
        last = agent(&["status"], &s.env);
        last.0 == 2
    })
    .unwrap_or_else(|| panic!("status never critical: {last:?}"));
    assert!(last.1.starts_with("CRITICAL"), "{}", last.1);
    assert!(last.1.contains("connection_refused"), "{}", last.1);
    assert!(last.1.contains("    1. "), "numbered steps: {}", last.1);
    assert!(last.1.contains("runbook: https://"), "{}", last.1);
}

#[test]
fn help_names_what_a_first_run_needs_and_the_endpoints() {
    for args in [&["--help"][..], &["run", "--help"]] {
        let (code, out, _) = agent(args, &[]);
        assert_eq!(code, 0);
        for needed in [
            "AGENT_DATABASE_URL",
            "FEATURE_DATABASE_TYPE",
            "APP_BASE_URL",
            "AGENT_LISTEN",
            "/findings",
            "/status",
            "/metrics",
            "status page",
        ] {
            assert!(out.contains(needed), "{args:?}: {needed} missing:\n{out}");
        }
    }
}

#[test]
fn status_of_an_agent_that_is_not_running_is_unknown() {
    let env = [("AGENT_LISTEN", format!("127.0.0.1:{}", free_port()))];
    let (code, out, _) = agent(&["status", "--timeout", "1s"], &env);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with("UNKNOWN") && out.contains("cannot connect"),
        "{out}"
    );
    let (code, out, _) = agent(&["status", "--format", "json", "--timeout", "1s"], &env);
    assert_eq!(code, 3);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["status"], "unknown");
}
