//! Connection floods against the agent's endpoint, bounded in count and time, loopback only:
//! many connections that send a partial request header (or nothing) and wait, a process's
//! resident memory and open descriptors, and the open-files limit the test itself has. Every
//! socket is closed when the [`Flood`] is dropped, also on a failed assertion.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A partial request header: the request line and one header, never the blank line.
pub const SLOW_HEADER: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// Open client connections, each either open or seen closed by the server.
pub struct Flood {
    conns: Vec<Option<TcpStream>>,
    /// Connections that could not be opened (refused, or no answer within the bound).
    pub failed_to_open: usize,
    pub opened_in: Duration,
}

impl Flood {
    /// Opens up to `n` connections to `127.0.0.1:port`, each sending `first` (may be empty),
    /// within `limit` overall (each connect bounded by 2 s).
    pub fn open(port: u16, n: usize, first: &[u8], limit: Duration) -> Flood {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        let mut conns = Vec::with_capacity(n);
        let mut failed_to_open = 0;
        for _ in 0..n {
            if started.elapsed() > limit {
                failed_to_open += 1;
                continue;
            }
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(mut s) => {
                    if !first.is_empty() {
                        let _ = s.write_all(first);
                    }
                    let _ = s.set_nonblocking(true);
                    conns.push(Some(s));
                }
                Err(_) => failed_to_open += 1,
            }
        }
        Flood {
            conns,
            failed_to_open,
            opened_in: started.elapsed(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Polls every open connection once; returns how many the server has closed so far.
    pub fn closed_by_server(&mut self) -> usize {
        let mut buf = [0u8; 512];
        for slot in &mut self.conns {
            if let Some(s) = slot {
                let closed = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break true,
                        // An answer (e.g. 408) is followed by the close; keep reading.
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => break true,
                    }
                };
                if closed {
                    *slot = None;
                }
            }
        }
        self.conns.iter().filter(|c| c.is_none()).count()
    }

    /// Waits until the server has closed every connection, or `limit`; returns the time taken.
    pub fn wait_all_closed(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if self.closed_by_server() == self.conns.len() {
                return Some(started.elapsed());
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Resident memory of a process in KiB (`VmRSS`), 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Descriptors a process has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The soft open-files limit of this (test) process.
pub fn own_nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

/// How long a plain HTTP GET takes, and its status (0 when it failed).
pub fn timed_get(port: u16, path: &str) -> (Duration, u16) {
    let t = Instant::now();
    let code = super::http_get(port, path).map(|r| r.0).unwrap_or(0);
    (t.elapsed(), code)
}
