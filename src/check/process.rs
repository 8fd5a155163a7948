//! Check `agent_process`: the agent's own resident memory, CPU time, open file descriptors and
//! their limit, and start time, read with sysinfo (and `/proc/self/fd`, `/proc/self/limits`);
//! exported as `rose_agent_*` and as the standard `process_*` series. No I/O beyond the local `/proc`.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{BoxFuture, Check, Observation};
use crate::catalog::{self, Sample};
use crate::error::{CheckError, ErrorKind};

pub(crate) const ID: &str = crate::catalog::checks::AGENT_PROCESS;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessStats {
    pub(crate) rss_bytes: u64,
    pub(crate) cpu_seconds: f64,
    pub(crate) open_fds: Option<u64>,
    /// The soft open-files limit.
    pub(crate) max_fds: Option<u64>,
    /// Unix time the process started (whole seconds, as sysinfo reads it).
    pub(crate) start_time_seconds: Option<f64>,
}

pub(crate) struct ProcessCheck {
    sys: Mutex<Option<System>>,
    pid: Option<Pid>,
}

impl ProcessCheck {
    pub(crate) fn new() -> Self {
        ProcessCheck {
            sys: Mutex::new(System::new().ok()),
            pid: sysinfo::get_current_pid().ok(),
        }
    }

    /// Reads the stats now (blocking, but only `/proc`).
    pub(crate) fn read(&self) -> Result<ProcessStats, CheckError> {
        let mut guard = self.sys.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(sys), Some(pid)) = (guard.as_mut(), self.pid) else {
            return Err(CheckError::new(
                ErrorKind::Io,
                "sysinfo is not available on this system",
            ));
        };
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let p = sys
            .process(pid)
            .ok_or_else(|| CheckError::new(ErrorKind::Io, "own process not found"))?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        Ok(ProcessStats {
            rss_bytes: p.memory(),
            cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
            open_fds,
            max_fds: crate::files::nofile_limit(),
            start_time_seconds: Some(p.start_time() as f64).filter(|t| *t > 0.0),
        })
    }
}

impl Default for ProcessCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl Check for ProcessCheck {
    fn id(&self) -> &str {
        ID
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move { self.read().map(Observation::Process) })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &ProcessStats, out: &mut Vec<Sample>) {
    out.push(Sample::new(&catalog::AGENT_RSS, &[], o.rss_bytes as f64));
    out.push(Sample::new(&catalog::AGENT_CPU, &[], o.cpu_seconds));
    if let Some(n) = o.open_fds {
        out.push(Sample::new(&catalog::AGENT_OPEN_FDS, &[], n as f64));
    }
    out.push(Sample::new(&catalog::PROCESS_RSS, &[], o.rss_bytes as f64));
    out.push(Sample::new(&catalog::PROCESS_CPU, &[], o.cpu_seconds));
    if let Some(n) = o.open_fds {
        out.push(Sample::new(&catalog::PROCESS_OPEN_FDS, &[], n as f64));
    }
    if let Some(n) = o.max_fds {
        out.push(Sample::new(&catalog::PROCESS_MAX_FDS, &[], n as f64));
    }
    if let Some(t) = o.start_time_seconds {
        out.push(Sample::new(&catalog::PROCESS_START_TIME, &[], t));
    }
}

/// The registry entry (the check list in `check/mod.rs`): Always: the agent's own process.
pub(crate) fn build(_b: &crate::check::Build) -> crate::check::Built {
    crate::check::one(ProcessCheck::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let s = ProcessCheck::new().read().unwrap();
        assert!(s.rss_bytes > 1_000_000, "{s:?}");
        assert!(s.open_fds.unwrap_or(0) > 0);
        assert!(s.max_fds.unwrap_or(0) >= s.open_fds.unwrap_or(0), "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 3600.0, "{s:?}");
    }

    #[test]
    fn exports_the_standard_process_series_beside_its_own() {
        let mut out = Vec::new();
        samples(
            &ProcessStats {
                rss_bytes: 5 << 20,
                cpu_seconds: 1.5,
                open_fds: Some(12),
                max_fds: Some(1024),
                start_time_seconds: Some(1_700_000_000.0),
            },
            &mut out,
        );
        let get = |name: &str| {
            out.iter()
                .find(|s| s.def.name == name)
                .and_then(|s| s.num())
        };
        assert_eq!(get("process_resident_memory_bytes"), Some(5242880.0));
        assert_eq!(get("process_cpu_seconds_total"), Some(1.5));
        assert_eq!(get("process_open_fds"), Some(12.0));
        assert_eq!(get("process_max_fds"), Some(1024.0));
        assert_eq!(get("process_start_time_seconds"), Some(1_700_000_000.0));
        assert_eq!(get("rose_agent_resident_memory_bytes"), Some(5242880.0));
    }
}
