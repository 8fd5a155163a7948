//! Test support: a throwaway Prometheus (Debian's 2.42) on a free loopback port scraping given
//! loopback targets every second, and its HTTP API. Killed and its data removed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::{free_port, http_get, wait_for};

pub struct Prometheus {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (`host:port` on loopback) as job `job` every second. `None` when
    /// prometheus is not installed (see `require_tool`).
    pub fn start(job: &str, targets: &[String]) -> Option<Prometheus> {
        if !super::require_tool("prometheus") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let prom = Prometheus { port, child, dir };
        wait_for(Duration::from_secs(30), || {
            http_get(port, "/-/ready")
                .map(|r| r.0 == 200)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("prometheus not ready:\n{}", prom.log()));
        Some(prom)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// GET `path` on the API, parsed; `None` unless 200 with JSON.
    pub fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = http_get(self.port, path).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// An instant query's result vector.
    pub fn query(&self, q: &str) -> Vec<Value> {
        self.api(&format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(q, NON_ALPHANUMERIC)
        ))
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
    }

    /// The single value of an instant query, if it has exactly one series.
    pub fn value(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
