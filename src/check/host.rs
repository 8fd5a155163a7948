//! Check `host_resources`: CPU, memory, swap, load, and the volume that holds the SQLite
//! checkpointer file (or `/` without one), read with sysinfo from `/proc` and `statvfs`.
//!
//! `statvfs` on a hung network mount can block, so the read runs on the blocking pool under the
//! check's timeout, and a read still stuck from a previous run makes the next run fail fast
//! instead of piling up threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

use super::{BoxFuture, Check, Observation};
use crate::catalog::{self, Sample};
use crate::config::Config;
use crate::error::{CheckError, ErrorKind};

pub(crate) const ID: &str = crate::catalog::checks::HOST_RESOURCES;

/// The volume holding a watched path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Volume {
    /// The path whose volume this is (the SQLite file's directory, or `/`).
    pub(crate) path: String,
    pub(crate) mount_point: String,
    pub(crate) total_bytes: u64,
    pub(crate) available_bytes: u64,
}

impl Volume {
    pub(crate) fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            1.0 - self.available_bytes as f64 / self.total_bytes as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStats {
    /// Busy share of all CPUs since the previous run, 0 to 1.
    pub(crate) cpu_usage_ratio: f64,
    pub(crate) cpus: u32,
    pub(crate) load: Option<[f64; 3]>,
    pub(crate) memory_total_bytes: u64,
    pub(crate) memory_available_bytes: u64,
    pub(crate) swap_total_bytes: u64,
    pub(crate) swap_used_bytes: u64,
    pub(crate) volume: Option<Volume>,
}

pub(crate) struct HostCheck {
    sys: Arc<Mutex<Option<System>>>,
    watch: PathBuf,
    busy: Arc<AtomicBool>,
}

impl HostCheck {
    pub(crate) fn new(config: &Config) -> HostCheck {
        let watch = config
            .app
            .sqlite_path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("/"));
        HostCheck {
            sys: Arc::new(Mutex::new(System::new().ok())),
            watch,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The nearest existing ancestor of `p`, canonicalized (relative paths from the working dir).
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if let Ok(real) = std::fs::canonicalize(c) {
            return Some(real);
        }
        cur = c.parent();
    }
    std::env::current_dir().ok()
}

/// Pure: the mount point with the longest prefix match for `path`.
pub(crate) fn best_mount<'a>(
    path: &Path,
    mounts: impl Iterator<Item = &'a Path>,
) -> Option<&'a Path> {
    mounts
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

fn read(sys: &Mutex<Option<System>>, watch: &Path) -> Result<HostStats, CheckError> {
    let mut guard = sys.lock().unwrap_or_else(|p| p.into_inner());
    let sys = guard
        .as_mut()
        .ok_or_else(|| CheckError::new(ErrorKind::Io, "sysinfo is not available on this system"))?;
    sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
    sys.refresh_memory_specifics(MemoryRefreshKind::everything());
    let load = System::load_average()
        .ok()
        .map(|l| [l.one, l.five, l.fifteen]);
    let volume = existing_ancestor(watch).and_then(|real| {
        let disks =
            Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage())
                .ok()?;
        let mount = best_mount(&real, disks.iter().map(|d| d.mount_point()))?.to_path_buf();
        let d = disks
            .iter()
            .filter(|d| d.mount_point() == mount)
            .max_by_key(|d| d.total_space())?;
        Some(Volume {
            path: watch.display().to_string(),
            mount_point: mount.display().to_string(),
            total_bytes: d.total_space(),
            available_bytes: d.available_space(),
        })
    });
    Ok(HostStats {
        cpu_usage_ratio: (f64::from(sys.global_cpu_usage()) / 100.0).clamp(0.0, 1.0),
        cpus: sys.cpus().len() as u32,
        load,
        memory_total_bytes: sys.total_memory(),
        memory_available_bytes: sys.available_memory(),
        swap_total_bytes: sys.total_swap(),
        swap_used_bytes: sys.used_swap(),
        volume,
    })
}

impl Check for HostCheck {
    fn id(&self) -> &str {
        ID
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(3)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            if self.busy.swap(true, Ordering::AcqRel) {
                return Err(CheckError::new(
                    ErrorKind::Io,
                    "the previous host read is still blocked (hung mount?)",
                ));
            }
            let (sys, watch, busy) = (self.sys.clone(), self.watch.clone(), self.busy.clone());
            let r = tokio::task::spawn_blocking(move || {
                let r = read(&sys, &watch);
                busy.store(false, Ordering::Release);
                r
            })
            .await
            .map_err(|e| CheckError::new(ErrorKind::Other, format!("host read: {e}")))?;
            r.map(Observation::Host)
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &HostStats, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::HOST_CPU_USAGE,
        &[],
        o.cpu_usage_ratio,
    ));
    out.push(Sample::new(&catalog::HOST_CPUS, &[], f64::from(o.cpus)));
    if let Some([a, b, c]) = o.load {
        out.push(Sample::new(&catalog::HOST_LOAD, &["1m"], a));
        out.push(Sample::new(&catalog::HOST_LOAD, &["5m"], b));
        out.push(Sample::new(&catalog::HOST_LOAD, &["15m"], c));
    }
    out.push(Sample::new(
        &catalog::HOST_MEMORY_TOTAL,
        &[],
        o.memory_total_bytes as f64,
    ));
    out.push(Sample::new(
        &catalog::HOST_MEMORY_AVAILABLE,
        &[],
        o.memory_available_bytes as f64,
    ));
    out.push(Sample::new(
        &catalog::HOST_SWAP_TOTAL,
        &[],
        o.swap_total_bytes as f64,
    ));
    out.push(Sample::new(
        &catalog::HOST_SWAP_USED,
        &[],
        o.swap_used_bytes as f64,
    ));
    if let Some(v) = &o.volume {
        let m = v.mount_point.as_str();
        out.push(Sample::new(
            &catalog::HOST_DISK_TOTAL,
            &[m],
            v.total_bytes as f64,
        ));
        out.push(Sample::new(
            &catalog::HOST_DISK_AVAILABLE,
            &[m],
            v.available_bytes as f64,
        ));
        out.push(Sample::new(
            &catalog::HOST_DISK_USED_RATIO,
            &[m],
            v.used_ratio(),
        ));
    }
}

/// The registry entry (the check list in `check/mod.rs`): Always: the host or container the agent runs in.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    crate::check::one(HostCheck::new(b.config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_mount_wins() {
        let mounts = [Path::new("/"), Path::new("/app"), Path::new("/app/data2")];
        assert_eq!(
            best_mount(Path::new("/app/data/memory.db"), mounts.iter().copied()),
            Some(Path::new("/app"))
        );
        assert_eq!(
            best_mount(Path::new("/srv"), mounts.iter().copied()),
            Some(Path::new("/"))
        );
    }

    #[test]
    fn reads_this_host() {
        let sys = Mutex::new(System::new().ok());
        let s = read(&sys, Path::new("/tmp/does/not/exist")).unwrap();
        assert!(s.cpus >= 1 && s.memory_total_bytes > 0, "{s:?}");
        let v = s.volume.expect("a volume for /tmp");
        assert!(
            v.total_bytes > 0 && (0.0..=1.0).contains(&v.used_ratio()),
            "{v:?}"
        );
    }
}
