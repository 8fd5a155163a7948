//! The agent's own endpoint with a web config file (exporter-toolkit style): HTTPS, basic auth
//! with bcrypt hashes, a bearer token; `/healthz` and `/readyz` stay open; a bad file is a
//! configuration error that names the key; a node_exporter `web-config.yml` with every
//! exporter-toolkit key (mutual TLS, versions, suites, curves, headers) served unchanged.

use crate::support;

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

/// Starts `agent run` on a free loopback port with this web config (Agent::start polls
/// plain-HTTP /healthz, which a TLS listener will not answer); returns the child, the port and
/// the file its stderr goes to.
fn start_with_web_config(
    web: &std::path::Path,
    pg: &PgCluster,
    logs: &std::path::Path,
) -> (KillOnDrop, u16, std::path::PathBuf) {
    let port = free_port();
    let err = logs.join("err");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .env_clear()
        .env("AGENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("AGENT_DATABASE_URL", pg.monitor_url())
        .env("AGENT_INTERVAL", "1s")
        .env("AGENT_WEB_CONFIG_FILE", web)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    (KillOnDrop(child), port, err)
}

#[test]
fn a_node_exporter_web_config_with_mutual_tls_is_served_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(dir.path()) else {
        return;
    };
    let Some((client_cert, client_key)) = make_client_cert(dir.path(), "prometheus") else {
        return;
    };
    // node_exporter's web-config.yml as its users write it: every exporter-toolkit key, some
    // values rustls cannot honour (a CBC suite, P-521, http2), none of which may refuse it.
    let web = dir.path().join("web-config.yml");
    std::fs::write(
        &web,
        format!(
            r#"tls_server_config:
  cert_file: {cert}
  key_file: {key}
  client_auth_type: "RequireAndVerifyClientCert"
  client_ca_file: {ca}
  min_version: TLS12
  max_version: TLS13
  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    - TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA
  prefer_server_cipher_suites: true
  curve_preferences:
    - CurveP521
    - CurveP256
    - X25519
http_server_config:
  http2: true
  headers:
    Strict-Transport-Security: max-age=31536000; includeSubDomains
    X-Frame-Options: deny
"#
        ),
    )
    .unwrap();
    // The file is exporter-toolkit's own format: Prometheus 2.42's promtool accepts it.
    if require_tool("promtool") {
        let out = std::process::Command::new("promtool")
            .args(["check", "web-config"])
            .arg(&web)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check web-config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let logs = tempfile::tempdir().unwrap();
    let (mut child, port, err) = start_with_web_config(&web, &pg, logs.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pem = std::fs::read(&client_cert).unwrap();
    pem.extend(std::fs::read(&client_key).unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let with_cert = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let without = client(&ca);
    let base = format!("https://127.0.0.1:{port}");
    let get = |c: &reqwest::Client, path: &str| {
        rt.block_on(async {
            c.get(format!("{base}{path}"))
                .send()
                .await
                .map(|r| (r.status().as_u16(), r.headers().clone()))
        })
    };
    wait_for(Duration::from_secs(15), || {
        get(&with_cert, "/healthz").is_ok_and(|(s, _)| s == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no mutual TLS: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    });
    let (status, headers) = get(&with_cert, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(headers["x-frame-options"], "deny");
    // Without a client certificate the handshake is refused: no HTTP answer at all, not even
    // on the probes.
    for path in ["/metrics", "/healthz"] {
        match get(&without, path) {
            Ok((s, _)) => panic!("{path} answered {s} without a client certificate"),
            Err(e) => assert!(!e.is_status(), "{e:?}"),
        }
    }
    // agent healthcheck / status follow the same file and present --cert/--key.
    let agent = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(args)
            .env_clear()
            .env("AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("AGENT_DATABASE_URL", pg.monitor_url())
            .env("AGENT_WEB_CONFIG_FILE", &web)
            .output()
            .unwrap()
    };
    let out = agent(&["healthcheck", "--cert", &client_cert, "--key", &client_key]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent(&["healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cert"),
        "the failure names the fix: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent(&[
        "status",
        "--format",
        "json",
        "--cert",
        &client_cert,
        "--key",
        &client_key,
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(
        summary["error"].is_null() && summary["checks"].as_array().is_some_and(|c| !c.is_empty()),
        "the summary came over mutual TLS: {summary}"
    );
    child.stop();
    // What rustls cannot honour is named once, and the file was not refused for it.
    let logs = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(
        logs.matches("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA").count(),
        1,
        "{logs}"
    );
    assert_eq!(logs.matches("CurveP521").count(), 1, "{logs}");
    assert_eq!(
        logs.matches("http_server_config.http2").count(),
        1,
        "{logs}"
    );
}

#[test]
fn a_client_ca_without_a_client_auth_type_is_refused_like_exporter_toolkit_does() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(dir.path()) else {
        return;
    };
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}\n"
        ),
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
        err.contains("client_ca_file") && err.contains("client_auth_type"),
        "{err}"
    );
}

#[test]
fn client_allowed_sans_and_rate_limit_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(dir.path()) else {
        return;
    };
    let Some(allowed) =
        make_client_cert_with_san(dir.path(), "scraper", Some("DNS:prometheus.monitoring"))
    else {
        return;
    };
    let Some(other) = make_client_cert(dir.path(), "someone") else {
        return;
    };
    // Inline PEM for the certificate and the CA (exporter-toolkit's `cert`, `client_ca`).
    let indent = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let web = dir.path().join("web-config.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert: |\n{}  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n{}  client_allowed_sans:\n    - prometheus.monitoring\nrate_limit:\n  interval: 1m\n  burst: 3\n",
            indent(&cert),
            indent(&ca)
        ),
    )
    .unwrap();
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let logs = tempfile::tempdir().unwrap();
    let (_child, port, err) = start_with_web_config(&web, &pg, logs.path());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client_with = |(c, k): &(String, String)| {
        let mut pem = std::fs::read(c).unwrap();
        pem.extend(std::fs::read(k).unwrap());
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let (good, bad) = (client_with(&allowed), client_with(&other));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |c: &reqwest::Client, path: &str| {
        rt.block_on(async {
            c.get(format!("https://127.0.0.1:{port}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    wait_for(Duration::from_secs(15), || {
        get(&good, "/healthz").is_ok_and(|s| s == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "not served: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    });
    // A certificate from the right CA without the allowed SAN: refused in the handshake.
    match get(&bad, "/healthz") {
        Ok(s) => panic!("a certificate without the allowed SAN got {s}"),
        Err(e) => assert!(!e.is_status(), "{e:?}"),
    }
    // rate_limit: a burst of 3 on the protected endpoints, then 429; the probes stay open.
    let codes: Vec<u16> = (0..5).map(|_| get(&good, "/metrics").unwrap()).collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    assert_eq!(get(&good, "/healthz").unwrap(), 200);
    let ready = get(&good, "/readyz").unwrap();
    assert!(ready == 200 || ready == 503, "{ready}");
}
