//! The agent's own endpoint with a web config file (exporter-toolkit style): HTTPS, basic auth
//! with bcrypt hashes, a bearer token; `/healthz` and `/readyz` stay open; a bad file is a
//! configuration error that names the key.

mod support;

use std::time::Duration;

use support::*;

fn client(ca: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[test]
fn https_with_basic_auth_and_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(dir.path()) else {
        return;
    };
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-Zq7\n").unwrap();
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
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    // Agent::start polls plain-HTTP /healthz, which a TLS listener will not answer: start by hand.
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .env_clear()
        .env("AGENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("AGENT_DATABASE_URL", pg.monitor_url())
        .env("AGENT_INTERVAL", "1s")
        .env("AGENT_WEB_CONFIG_FILE", &web)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(logs.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = client(&ca);
    let base = format!("https://127.0.0.1:{port}");
    let status = |path: &str, auth: Option<&str>| {
        let mut req = c.get(format!("{base}{path}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        rt.block_on(async { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) })
    };
    wait_for(Duration::from_secs(15), || status("/healthz", None) == 200).unwrap_or_else(|| {
        panic!(
            "no https: {}",
            std::fs::read_to_string(logs.path().join("err")).unwrap_or_default()
        )
    });
    wait_for(Duration::from_secs(10), || status("/readyz", None) == 200)
        .expect("readiness stays open, without credentials");
    assert_eq!(status("/metrics", None), 401);
    assert_eq!(status("/findings", None), 401);
    let basic = |u: &str, p: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    assert_eq!(status("/metrics", Some(&basic("prometheus", "wrong"))), 401);
    // A failed attempt holds bcrypt off for a moment (429), then the right password gets in.
    wait_for(Duration::from_secs(3), || {
        status("/metrics", Some(&basic("prometheus", "scrape-pw"))) == 200
    })
    .expect("the right password gets in once the failure's hold-off has passed");
    assert_eq!(status("/metrics", Some("Bearer tok-Zq7")), 200);
    assert_eq!(status("/findings", Some("Bearer tok-Zq7")), 200);
    assert_eq!(status("/metrics", Some("Bearer nope")), 401);
    let body = rt.block_on(async {
        c.get(format!("{base}/metrics"))
            .header("authorization", "Bearer tok-Zq7")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(body.contains("rose_agent_build_info"), "{body}");
    // Plain HTTP to the TLS port gets no metrics.
    assert!(
        http_get(port, "/metrics")
            .map(|(code, _)| code != 200)
            .unwrap_or(true)
    );
    child.stop();
    let logs = std::fs::read_to_string(logs.path().join("err")).unwrap_or_default();
    assert!(
        !logs.contains("scrape-pw")
            && !logs.contains("tok-Zq7")
            && !logs.contains(MONITOR_PASSWORD),
        "{logs}"
    );
}

/// Kills the child when the test ends, also on a failed assertion.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_bad_web_config_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "basic_auth_users:\n  prometheus: plaintext-not-a-hash\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .env_clear()
        .env("DATABASE_URL", "postgresql://u@127.0.0.1/db")
        .env("AGENT_WEB_CONFIG_FILE", &web)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AGENT_WEB_CONFIG_FILE") && err.contains("bcrypt"),
        "{err}"
    );
    assert!(!err.contains("plaintext-not-a-hash"), "{err}");
}
