//! The deployment examples under deploy/, checked as far as this machine allows: promtool on the
//! Prometheus configs, the generated PrometheusRule is fresh, the Kubernetes manifests parse and
//! carry the probes and limits, systemd accepts the unit, the Dockerfile builds the `agent` binary
//! into a non-root image whose HEALTHCHECK (`agent healthcheck`) works against a running agent.

use crate::support;

use std::path::Path;
use std::process::Command;

use support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn prometheus_configs_pass_promtool() {
    if !require_tool("promtool") {
        return;
    }
    for f in [
        "deploy/prometheus/federation.yml",
        "deploy/prometheus/remote_write.yml",
    ] {
        let out = Command::new("promtool")
            .args(["check", "config"])
            .arg(root().join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prometheus_rule_is_generated_from_the_alert_rules() {
    if !require_tool("python3") {
        return;
    }
    let out = Command::new(root().join("scripts/gen-prometheusrule"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read("deploy/kubernetes/prometheusrule.yaml"),
        "stale: run scripts/gen-prometheusrule"
    );
    let rule = read("deploy/kubernetes/prometheusrule.yaml");
    for line in read("alerts/rose.rules.yml").lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(rule.contains(&format!("- alert: {name}")), "{name}");
        }
    }
}

#[test]
fn kubernetes_manifests_parse_and_carry_probes_and_limits() {
    if !require_tool("python3") {
        return;
    }
    let script = r#"
import sys, yaml
docs = {}
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f)):
        docs[d["kind"]] = d
dep = docs["Deployment"]
cs = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
a = cs["rose-agent"]
assert "app" in cs, cs.keys()
assert a["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert a["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert a["resources"]["limits"]["memory"] and a["resources"]["limits"]["cpu"]
assert a["securityContext"]["runAsUser"] != 0
assert a["securityContext"]["readOnlyRootFilesystem"] is True
pm = docs["PodMonitor"]
assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
label = pm["spec"]["jobLabel"]
assert dep["spec"]["template"]["metadata"]["labels"][label] == "rose-agent"
assert pm["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
rules = docs["PrometheusRule"]["spec"]["groups"]
assert sum(len(g["rules"]) for g in rules) >= 10
print("ok")
"#;
    let dir = root().join("deploy/kubernetes");
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.join("deployment.yaml"))
        .arg(dir.join("podmonitor.yaml"))
        .arg(dir.join("prometheusrule.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'yaml'") {
        eprintln!("skipping: python3-yaml not installed");
        return;
    }
    assert!(out.status.success(), "{err}");
}

/// The HTTPS example (issue 16): the Deployment patch gives the sidecar its web config from a
/// Secret and probes with `scheme: HTTPS` on the same paths and port as the plain manifest; the
/// PodMonitor patch scrapes the same endpoint over https. Applied here as `kubectl patch`
/// would (strategic merge by container name; merge patch of the PodMonitor spec).
#[test]
fn kubernetes_tls_patches_probe_and_scrape_over_https() {
    if !require_tool("python3") {
        return;
    }
    let script = r#"
import sys, yaml
dep, dpatch, pm, ppatch = (yaml.safe_load(open(f)) for f in sys.argv[1:5])
base = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}["rose-agent"]
pspec = dpatch["spec"]["template"]["spec"]
p = {c["name"]: c for c in pspec["containers"]}["rose-agent"]
for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
    got = p[probe]["httpGet"]
    assert got["scheme"] == "HTTPS", got
    assert got["path"] == base[probe]["httpGet"]["path"] == path, got
    assert got["port"] == base[probe]["httpGet"]["port"], got
env = {e["name"]: e.get("value") for e in p["env"]}
cfg = env["AGENT_WEB_CONFIG_FILE"]
mounts = {m["name"]: m["mountPath"] for m in p["volumeMounts"]}
vols = {v["name"]: v for v in pspec["volumes"]}
name = next(n for n, path in mounts.items() if cfg.startswith(path + "/"))
secret = vols[name]["secret"]["secretName"]
text = open(sys.argv[2]).read()
assert "--from-file=web-config.yml" in text and "secret generic " + secret in text, secret
for line in text.splitlines():
    if "cert_file:" in line or "key_file:" in line:
        assert line.split(":", 1)[1].strip().startswith(mounts[name] + "/"), line
ep = ppatch["spec"]["podMetricsEndpoints"][0]
old = pm["spec"]["podMetricsEndpoints"][0]
for k in ("port", "path", "interval", "scrapeTimeout"):
    assert ep[k] == old[k], k
assert ep["scheme"] == "https" and ep["tlsConfig"]["ca"]["secret"]["name"] == secret
print("ok")
"#;
    let dir = root().join("deploy/kubernetes");
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.join("deployment.yaml"))
        .arg(dir.join("deployment-tls.patch.yaml"))
        .arg(dir.join("podmonitor.yaml"))
        .arg(dir.join("podmonitor-tls.patch.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'yaml'") {
        eprintln!("skipping: python3-yaml not installed");
        return;
    }
    assert!(out.status.success(), "{err}");
}

/// The shipped defaults agree (issue 13 item 5): the monitoring role created by
/// scripts/create-monitoring-role.sql has room for one agent per replica of the Kubernetes
/// deployment, plus the new agent of a rolling update (maxSurge) and `agent diagnose`.
#[test]
fn the_monitoring_roles_limit_fits_the_shipped_fleet() {
    let sql = read("scripts/create-monitoring-role.sql");
    let limit: u32 = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .find_map(|l| {
            l.split("CONNECTION LIMIT")
                .nth(1)
                .map(|r| r.trim().trim_end_matches(';').trim())
        })
        .and_then(|n| n.parse().ok())
        .expect("the script sets a CONNECTION LIMIT");
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let replicas: u32 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("replicas");
    let surge: u32 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("maxSurge:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    assert!(
        limit > replicas + surge,
        "CONNECTION LIMIT {limit} < {replicas} agents + {surge} surge + 1 diagnose"
    );
}

#[test]
fn systemd_unit_verifies() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify wants the ExecStart binary to exist: point it at the one under test.
    let unit = read("deploy/systemd/rose-agent.service")
        .replace("/usr/local/bin/rose-agent", env!("CARGO_BIN_EXE_agent"));
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        // The DSN as a credential: DynamicUser's user cannot be given a file beforehand.
        "LoadCredential=database-url:/etc/rose-agent/database-url",
        "Environment=AGENT_DATABASE_URL_FILE=%d/database-url",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(key), "{key}");
    }
    // With DynamicUser=yes there is no rose-agent user or group before the unit runs: an
    // install line giving a file to them cannot work.
    for line in unit
        .lines()
        .filter(|l| l.trim_start_matches(['#', ' ']).starts_with("install "))
    {
        assert!(
            !line.contains("-g rose-agent") && !line.contains("-o rose-agent"),
            "{line}"
        );
    }
    let path = dir.path().join("rose-agent.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A transient copy of the unit under /run/systemd/system, stopped and removed on drop.
struct RuntimeUnit {
    name: String,
}

impl Drop for RuntimeUnit {
    fn drop(&mut self) {
        let _ = Command::new("systemctl")
            .args(["stop", &self.name])
            .status();
        let _ = std::fs::remove_file(Path::new("/run/systemd/system").join(&self.name));
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
}

/// The shipped unit started by systemd itself, where systemd is PID 1 and the tests run as
/// root: the DSN reaches the agent through LoadCredential= (rose_pg_up 1 on /metrics) under
/// DynamicUser. Elsewhere (a container without systemd) it skips.
#[test]
fn systemd_unit_starts_and_reads_the_dsn_credential() {
    if !Path::new("/run/systemd/system").is_dir() || !require_tool("systemctl") || !is_root_uid() {
        eprintln!("skipping: systemd is not PID 1 here (or not root)");
        return;
    }
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let dsn = dir.path().join("database-url");
    std::fs::write(&dsn, pg.monitor_url()).unwrap();
    let port = free_port();
    let name = format!("rose-agent-test-{}.service", std::process::id());
    let unit = read("deploy/systemd/rose-agent.service")
        .replace(
            "/usr/local/bin/rose-agent --config /etc/rose-agent/agent.toml run",
            &format!("{} run", env!("CARGO_BIN_EXE_agent")),
        )
        .replace("/etc/rose-agent/database-url", &dsn.display().to_string())
        .replace(
            "[Service]\n",
            &format!("[Service]\nEnvironment=AGENT_LISTEN=127.0.0.1:{port}\n"),
        );
    std::fs::write(Path::new("/run/systemd/system").join(&name), unit).unwrap();
    let guard = RuntimeUnit { name: name.clone() };
    assert!(
        Command::new("systemctl")
            .arg("daemon-reload")
            .status()
            .unwrap()
            .success()
    );
    let started = Command::new("systemctl")
        .args(["start", &name])
        .status()
        .unwrap();
    let journal = || {
        Command::new("journalctl")
            .args(["-u", &name, "--no-pager", "-n", "50"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(started.success(), "{}", journal());
    let up = wait_for(std::time::Duration::from_secs(30), || {
        http_get(port, "/metrics")
            .map(|(_, b)| Metrics::parse(&b).get("rose_pg_up") == Some(1.0))
            .unwrap_or(false)
    });
    assert!(up.is_some(), "{}", journal());
    drop(guard);
}

fn is_root_uid() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_checks_healthz() {
    let d = read("deploy/Dockerfile");
    assert!(d.matches("\nFROM ").count() + d.starts_with("FROM ") as usize >= 2);
    assert!(d.contains("AS build"));
    assert!(d.contains("--bin agent"));
    assert!(d.contains("COPY --from=build /src/target/release/agent /usr/local/bin/agent"));
    let user = d
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );
    let hc = d
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(hc.contains("\"healthcheck\""), "{hc}");
    assert!(d.contains("ENTRYPOINT [\"/usr/local/bin/agent\"]"));
    let rust = d
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .unwrap();
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert!(rust.starts_with(&msrv), "{rust} vs rust-version {msrv}");
}

#[test]
fn agent_healthcheck_answers_like_the_container_healthcheck() {
    let agent = Agent::start(&[("AGENT_APP_PROBES", "off".into())]);
    let run = |addr: String| {
        Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["healthcheck", "--addr", &addr, "--timeout", "2s"])
            .env_clear()
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(run(format!("127.0.0.1:{}", agent.port)), Some(0));
    assert_eq!(run(format!("127.0.0.1:{}", free_port())), Some(1));
}
