//! `/metrics` as scrapers ask for it (issue 16): a real Prometheus 2.42 negotiates OpenMetrics
//! and gzip (seen on the wire through a recording proxy, and in Prometheus' own metadata, which
//! has units only from OpenMetrics) and stores every sample the text format has; plain clients
//! get the text format (`promtool check metrics` clean), gzip only when they ask, and HEAD.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::net::Proxy;
use support::prom::Prometheus;
use support::*;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What Prometheus 2.42 sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One HTTP/1.0 request on loopback: (status, lower-case headers, body bytes).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hdrs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, hdrs, buf[split + 4..].to_vec())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn gunzip(b: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut out)
        .expect("not valid gzip");
    out
}

/// Sample lines of an exposition (text or OpenMetrics).
fn samples(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

fn ready_agent(pg: &PgCluster) -> Agent {
    let agent = Agent::start(&fast_env(pg.monitor_url()));
    wait_for(Duration::from_secs(20), || agent.get("/readyz").0 == 200)
        .unwrap_or_else(|| panic!("agent not ready: {}", agent.output()));
    agent
}

#[test]
fn prometheus_negotiates_gzipped_openmetrics_and_stores_every_sample() {
    if !require_tool("prometheus") || !require_tool("promtool") {
        return;
    }
    let pg = PgCluster::start();
    let agent = ready_agent(&pg);
    let proxy = Proxy::start(agent.port);
    let prom = Prometheus::start("rose-agent", &[format!("127.0.0.1:{}", proxy.port)]).unwrap();
    let fail = |what: &str| -> ! {
        panic!(
            "{what}\n--- prometheus ---\n{}\n--- agent ---\n{}",
            prom.log(),
            agent.output()
        )
    };
    if wait_for(Duration::from_secs(30), || {
        prom.value("up{job=\"rose-agent\"}") == Some(1.0)
    })
    .is_none()
    {
        fail("no successful scrape");
    }

    // Prometheus parsed OpenMetrics: only that parser reports units, and a counter's family is
    // named without `_total`.
    let metadata = |metric: &str| {
        prom.api(&format!("/api/v1/targets/metadata?metric={metric}"))
            .and_then(|v| v["data"].as_array().and_then(|a| a.first().cloned()))
    };
    if wait_for(Duration::from_secs(10), || {
        metadata("rose_agent_start_time_seconds").is_some()
    })
    .is_none()
    {
        fail("no metadata");
    }
    let start = metadata("rose_agent_start_time_seconds").unwrap();
    assert_eq!(start["unit"], "seconds", "{start}");
    let runs = metadata("rose_agent_check_runs")
        .unwrap_or_else(|| fail("no counter family rose_agent_check_runs"));
    assert_eq!(runs["type"], "counter", "{runs}");

    // On the wire: Prometheus asked for both, and got OpenMetrics, gzipped, much smaller.
    let sent = String::from_utf8_lossy(&proxy.recorded(true)).to_ascii_lowercase();
    assert!(
        sent.contains("accept: application/openmetrics-text"),
        "{sent}"
    );
    assert!(sent.contains("accept-encoding: gzip"), "{sent}");
    let got = proxy.recorded(false);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-type: {OPENMETRICS}")),
        "{head}"
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let wire_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fail(&format!("no content-length: {head}")));

    // Every sample of the text format reached Prometheus (the snapshot is steady by now, so
    // a scrape and a GET a moment apart agree; retried over a few scrapes).
    let mut last = (0, None);
    let same = wait_for(Duration::from_secs(15), || {
        let (code, body) = agent.get("/metrics");
        assert_eq!(code, 200);
        last = (
            samples(&body),
            prom.value("scrape_samples_scraped{job=\"rose-agent\"}"),
        );
        last.1 == Some(last.0 as f64)
    });
    assert!(
        same.is_some(),
        "text samples vs scrape_samples_scraped: {last:?}"
    );
    assert!(last.0 > 100, "{last:?}");
    let (_, text) = agent.get("/metrics");
    assert!(
        wire_len * 4 < text.len(),
        "gzipped {wire_len} B vs text {} B",
        text.len()
    );
    eprintln!(
        "text {} B, gzipped OpenMetrics on the wire {wire_len} B, {} samples",
        text.len(),
        last.0
    );
    promtool_check_metrics(&text);
}

#[test]
fn plain_clients_get_text_gzip_only_when_asked_and_head_has_no_body() {
    let pg = PgCluster::start();
    let agent = ready_agent(&pg);

    let (code, h, plain) = request(agent.port, "GET", "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(header(&h, "content-type"), Some(TEXT));
    assert_eq!(header(&h, "content-encoding"), None);
    let plain = String::from_utf8(plain).unwrap();
    assert!(
        plain.contains("\nrose_agent_snapshot_age_seconds "),
        "{plain}"
    );
    promtool_check_metrics(&plain);

    let (code, h, gz) = request(
        agent.port,
        "GET",
        "/metrics",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(code, 200);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"));
    assert_eq!(header(&h, "content-type"), Some(TEXT));
    let text = gunzip(&gz);
    assert!(gz.len() * 4 < text.len(), "{} vs {}", gz.len(), text.len());
    assert_eq!(samples(&text), samples(&plain));
    assert!(
        text.contains("\nrose_agent_snapshot_age_seconds "),
        "{text}"
    );
    promtool_check_metrics(&text);

    for enc in [None, Some("gzip")] {
        let mut hs = vec![("Accept", PROMETHEUS_ACCEPT)];
        hs.extend(enc.map(|e| ("Accept-Encoding", e)));
        let (code, h, body) = request(agent.port, "GET", "/metrics", &hs);
        assert_eq!(code, 200);
        assert_eq!(header(&h, "content-type"), Some(OPENMETRICS));
        let om = if enc.is_some() {
            gunzip(&body)
        } else {
            String::from_utf8(body).unwrap()
        };
        assert!(om.ends_with("\n# EOF\n"), "{om}");
        assert_eq!(om.matches("# EOF").count(), 1);
        assert!(om.contains("\nrose_agent_snapshot_age_seconds "), "{om}");
        assert!(
            om.contains("# TYPE rose_agent_check_runs counter\n"),
            "{om}"
        );
        assert!(
            om.contains("\nrose_agent_check_runs_total{check=\"pg_connectivity\"} "),
            "{om}"
        );
        assert_eq!(samples(&om), samples(&plain));
    }

    let (code, h, body) = request(agent.port, "HEAD", "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(header(&h, "content-type"), Some(TEXT));
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
    let len: usize = header(&h, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        len.abs_diff(plain.len()) < 64,
        "HEAD length {len} vs GET {}",
        plain.len()
    );
}

/// The agent's build: rustc's version as `rustc --version` prints it, git's short revision.
fn tool_word(cmd: &str, args: &[&str], word: usize) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    out.status
        .success()
        .then(|| s.split_whitespace().nth(word).map(str::to_owned))?
}

#[test]
fn standard_process_series_and_build_info() {
    if !require_tool("prlimit") {
        return;
    }
    let agent = Agent::start_wrapped(&["prlimit", "--nofile=2000:4000"], &[]);
    let mut m = Metrics::default();
    wait_for(Duration::from_secs(10), || {
        m = agent.metrics();
        m.get("process_open_fds").is_some()
    })
    .unwrap_or_else(|| panic!("no process_open_fds: {:?}", m.names()));
    assert_eq!(m.get("process_max_fds"), Some(2000.0), "the soft limit");
    assert!(m.get("process_open_fds").unwrap() > 2.0);
    assert!(m.get("process_resident_memory_bytes").unwrap() > 1e6);
    assert!(m.get("process_cpu_seconds_total").unwrap() >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = m.get("process_start_time_seconds").unwrap();
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "{started} vs {now}"
    );

    let info: Vec<&String> =
        m.0.keys()
            .filter(|k| k.starts_with("rose_agent_build_info{"))
            .collect();
    assert_eq!(info.len(), 1, "{info:?}");
    let info = info[0];
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    let rustc = tool_word("rustc", &["--version"], 1).unwrap();
    assert!(info.contains(&format!("rustc=\"{rustc}\"")), "{info}");
    assert!(
        info.contains("target=\"") && info.contains("linux"),
        "{info}"
    );
    if std::env::var("ROSE_AGENT_REVISION").is_err()
        && let Some(rev) = tool_word("git", &["rev-parse", "--short=12", "HEAD"], 0)
    {
        assert!(info.contains(&format!("revision=\"{rev}\"")), "{info}");
    }
    promtool_check_metrics(&agent.get("/metrics").1);
}
