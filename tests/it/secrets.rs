//! One distinctive password fed through every path the agent has, and everything the agent
//! emits grepped for it: logs (text and JSON, healthy and failing), /metrics, /findings,
//! `--print-config`, `diagnose` (text and JSON), alerts pushed to Alertmanager, OTLP export,
//! with the DSN in URL form, key=value form (from a file) and as the replica URL.

use crate::support;

use std::io::Write;
use std::time::Duration;

use support::*;

const SECRET: &str = "Xq9-Secret-pw_7";

#[test]
fn the_password_reaches_no_output() {
    let pg = PgCluster::start();
    pg.psql(&format!("ALTER ROLE {MONITOR_USER} PASSWORD '{SECRET}'"));
    let url = format!(
        "postgresql://{MONITOR_USER}:{SECRET}@127.0.0.1:{}/{DBNAME}?sslmode=disable",
        pg.port
    );
    let wrong = url.replace(SECRET, &format!("{SECRET}-wrong"));
    let kv = format!(
        "host=127.0.0.1 port={} user={MONITOR_USER} password='{SECRET}' dbname={DBNAME} sslmode=disable",
        pg.port
    );
    let dir = tempfile::tempdir().unwrap();
    let kv_file = dir.path().join("dsn");
    std::fs::File::create(&kv_file)
        .unwrap()
        .write_all(kv.as_bytes())
        .unwrap();
    // Alertmanager and the OTLP collector are both this recorder: whatever is sent is kept.
    let sink = Webhook::start();
    let common = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("AGENT_INTERVAL", "1s".to_owned()),
            ("AGENT_CONNECT_TIMEOUT", "300ms".to_owned()),
            ("AGENT_STATEMENT_TIMEOUT", "300ms".to_owned()),
            ("AGENT_FINDING_PENDING_CYCLES", "1".to_owned()),
            (
                "AGENT_ALERTMANAGER_URL",
                format!("http://127.0.0.1:{}", sink.port),
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{}", sink.port),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_owned()),
            ("DATABASE_READ_REPLICA_URL", url.clone()),
            ("FEATURE_DATABASE_TYPE", "postgresql".to_owned()),
        ];
        v.extend(extra);
        v
    };
    let mut everything = String::new();
    // A healthy agent (URL form), one with the wrong password, one reading the key=value form
    // from a file, one in JSON log format.
    let runs = [
        common(vec![("AGENT_DATABASE_URL", url.clone())]),
        common(vec![("AGENT_DATABASE_URL", wrong.clone())]),
        common(vec![
            ("AGENT_DATABASE_URL_FILE", kv_file.display().to_string()),
            ("AGENT_LOG_FORMAT", "json".into()),
        ]),
    ];
    for env in &runs {
        let agent = Agent::start(env);
        wait_for(Duration::from_secs(10), || agent.get("/readyz").0 == 200).expect("ready");
        std::thread::sleep(Duration::from_secs(3));
        everything.push_str(&agent.get("/metrics").1);
        everything.push_str(&agent.get("/findings").1);
        // The status page, its JSON and `agent status` (issue 15).
        everything.push_str(&agent.get("/").1);
        everything.push_str(&agent.get("/status").1);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["status", "--addr", &format!("127.0.0.1:{}", agent.port)])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        everything.push_str(&String::from_utf8_lossy(&status.stdout));
        everything.push_str(&agent.output());
    }
    assert!(
        everything.contains("auth_failed"),
        "the failing run should report auth_failed"
    );
    for env in &runs {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["run", "--print-config"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        everything.push_str(&String::from_utf8_lossy(&out.stdout));
        everything.push_str(&String::from_utf8_lossy(&out.stderr));
        for args in [&["diagnose"][..], &["diagnose", "--format", "json"][..]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
                .args(args)
                .env_clear()
                .env("RUST_LOG", "debug")
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .unwrap();
            everything.push_str(&String::from_utf8_lossy(&out.stdout));
            everything.push_str(&String::from_utf8_lossy(&out.stderr));
        }
    }
    // An unusable DSN (unencoded '@') must not echo the password either.
    let broken = format!("postgresql://{MONITOR_USER}:{SECRET}@x@127.0.0.1/{DBNAME}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("diagnose")
        .env_clear()
        .env("DATABASE_URL", &broken)
        .output()
        .unwrap();
    everything.push_str(&String::from_utf8_lossy(&out.stdout));
    let bodies = sink.bodies();
    assert!(
        bodies.iter().any(|b| b.contains("alertname")),
        "no alert was pushed: {} bodies",
        bodies.len()
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("rose.pg.up") || b.contains("check pg_connectivity")),
        "no OTLP data arrived"
    );
    for b in &bodies {
        everything.push_str(b);
    }
    assert!(
        everything.len() > 10_000,
        "too little output to be meaningful: {}",
        everything.len()
    );
    assert!(
        !everything.contains(SECRET),
        "the password leaked:\n{}",
        &everything[everything.find(SECRET).unwrap().saturating_sub(300)..]
    );
}

/// Malformed DSNs as people paste them, each holding the password: no scheme, a mistyped
/// scheme, a JSON value, a stray space, an open quote, a bad port, bad percent-encoding.
fn malformed_dsns(secret: &str) -> Vec<String> {
    vec![
        format!("{MONITOR_USER}:{secret}@db.example:5432/{DBNAME}"),
        format!("postgresql:/{MONITOR_USER}:{secret}@db.example/{DBNAME}"),
        format!("postgresql//{MONITOR_USER}:{secret}@db.example/{DBNAME}"),
        format!(r#"{{"url": "postgresql://{MONITOR_USER}:{secret}@db.example/{DBNAME}"}}"#),
        format!("host=db.example user={MONITOR_USER} password=a {secret} dbname={DBNAME}"),
        format!("host=db.example user={MONITOR_USER} password='{secret}"),
        format!("postgresql://{MONITOR_USER}:{secret}"),
        format!("postgresql://{MONITOR_USER}:{secret}%zz@db.example/{DBNAME}"),
    ]
}

#[test]
fn malformed_dsns_are_not_echoed_at_start_in_diagnose_or_on_reload() {
    let leaked = |text: &str| ["Xq9", "Secret", "pw_7"].iter().any(|m| text.contains(m));
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AGENT_APP_PROBES", "off")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), all)
    };
    for dsn in malformed_dsns(SECRET) {
        for key in [
            "AGENT_DATABASE_URL",
            "DATABASE_URL",
            "DATABASE_READ_REPLICA_URL",
        ] {
            // Start: exit 64 with the variable named and the problem said, nothing quoted.
            let (code, out) = run(&["run"], &[(key, &dsn)]);
            assert_eq!(code, Some(64), "{dsn}: {out}");
            assert!(out.contains(key) && !leaked(&out), "{dsn}:\n{out}");
            for args in [&["diagnose"][..], &["diagnose", "--format", "json"][..]] {
                let (_, out) = run(args, &[(key, &dsn)]);
                assert!(out.contains(key) && !leaked(&out), "{dsn} {args:?}:\n{out}");
            }
        }
    }

    // Reload: the running agent gets each broken DSN in its file and a SIGHUP; the rejection is
    // logged at error level without the value.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "[agent]\ninterval = \"1s\"\n").unwrap();
    let agent = Agent::start(&[
        ("AGENT_CONFIG", file.display().to_string()),
        ("AGENT_APP_PROBES", "off".into()),
    ]);
    let dsns = malformed_dsns(SECRET);
    for (i, dsn) in dsns.iter().enumerate() {
        let toml_value = toml::Value::String(dsn.clone()).to_string();
        std::fs::write(
            &file,
            format!("[agent]\ninterval = \"1s\"\n[database]\nurl = {toml_value}\n"),
        )
        .unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &agent.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        wait_for(Duration::from_secs(5), || {
            agent.output().matches("Reload rejected").count() > i
        })
        .unwrap_or_else(|| panic!("{dsn}: not rejected: {}", agent.output()));
    }
    let out = agent.output();
    assert!(
        out.contains("ERROR") && out.contains("DATABASE_URL"),
        "{out}"
    );
    assert!(!leaked(&out), "{out}");
    assert_eq!(agent.get("/healthz").0, 200);
}
