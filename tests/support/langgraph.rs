//! The app's real LangGraph library: a Python venv with `langgraph-checkpoint-postgres` and
//! `psycopg[binary]`, built once and cached under `target/` (reused by every test and run), and
//! helpers that run `PostgresSaver.from_conn_string(dsn).setup()` exactly as the app would, an
//! app role owning a schema, the monitoring-role script through `psql`, and a writer that puts
//! checkpoints through `PostgresSaver.put` at a pace, as the app's interfaces do.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{DBNAME, PgCluster, require_tool};

/// The library version the scenarios run (the one the issue reproduced with).
pub const LANGGRAPH_PG: &str = "langgraph-checkpoint-postgres==3.2.0";
pub const PSYCOPG: &str = "psycopg[binary]==3.3.9";
/// The app's role in the scenarios (owns its schema and runs `setup()`).
pub const APP_USER: &str = "rose_app";
pub const APP_PASSWORD: &str = "Ap9-app-S3cret";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn python_ok(python: &Path, import: &str) -> bool {
    Command::new(python)
        .args(["-c", import])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The venv's python, building the venv on first use (bounded by `timeout 600`); `None` (a
/// skip) when python3 is missing outside CI. Concurrent tests each build in their own
/// directory and the first rename wins, so no test sees a half-built venv.
pub fn python() -> Option<PathBuf> {
    venv(
        "langgraph-venv",
        &[LANGGRAPH_PG, PSYCOPG],
        "import langgraph.checkpoint.postgres, psycopg",
    )
}

/// A venv with both savers (`scripts/migrate_threads.py` reads SQLite and writes PostgreSQL),
/// the SQLite package pinned as in `langgraph_sqlite`.
pub fn migration_python() -> Option<PathBuf> {
    venv(
        "langgraph-migrate-venv",
        &[LANGGRAPH_PG, PSYCOPG, super::langgraph_sqlite::PACKAGE],
        "import langgraph.checkpoint.postgres, langgraph.checkpoint.sqlite, psycopg",
    )
}

/// Grafana's dashboard schema as a package ships it: the foundation SDK's models, generated
/// from Grafana's CUE kinds (`tests/grafana_schema.py` decodes each dashboard with them). The
/// pin is the 11.6 line's newest build; the SDK's epoch prefix orders its builds.
pub const GRAFANA_SDK: &str = "grafana-foundation-sdk==1769699379!11.6.0";

/// A venv with Grafana's foundation SDK (dashboard schema models), cached like [`python`].
pub fn grafana_python() -> Option<PathBuf> {
    venv(
        "grafana-sdk-venv",
        &[GRAFANA_SDK],
        "import grafana_foundation_sdk.models.dashboard",
    )
}

fn venv(name: &str, packages: &[&str], import: &str) -> Option<PathBuf> {
    let dir = target_dir().join(name);
    let py = dir.join("bin/python");
    if python_ok(&py, import) {
        return Some(py);
    }
    if !require_tool("python3") {
        return None;
    }
    let tmp = target_dir().join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{} (scripts/setup installs python3-venv)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("timeout")
        .args(["120", "python3", "-m", "venv"])
        .arg(&tmp));
    run(Command::new("timeout")
        .arg("600")
        .arg(tmp.join("bin/pip"))
        .args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "--timeout",
            "60",
        ])
        .args(packages));
    // A venv's scripts name its own path, so the rename is only a claim of the cache slot:
    // when another test got there first, drop ours and use theirs.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(
        python_ok(&py, import),
        "the venv at {} does not import what it was built for ({import})",
        dir.display()
    );
    Some(py)
}

/// The app role's DSN, its `search_path` set in `options` as an app would.
pub fn app_url(pg: &PgCluster, search_path: Option<&str>) -> String {
    let mut u = format!(
        "postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{DBNAME}?sslmode=disable",
        pg.port
    );
    if let Some(sp) = search_path {
        u.push_str(&format!("&options=-c%20search_path%3D{sp}"));
    }
    u
}

/// Creates the app role owning schema `schema` (and allowed to connect).
pub fn create_app_role(pg: &PgCluster, schema: &str) {
    pg.psql(&format!(
        "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'; \
         GRANT CONNECT, CREATE ON DATABASE {DBNAME} TO {APP_USER}; \
         CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {APP_USER}"
    ));
}

/// Runs the real `PostgresSaver.from_conn_string(dsn).setup()`, as the app does.
pub fn setup(python: &Path, dsn: &str) {
    let out = Command::new("timeout")
        .arg("120")
        .arg(python)
        .args([
            "-c",
            "import sys\n\
             from langgraph.checkpoint.postgres import PostgresSaver\n\
             with PostgresSaver.from_conn_string(sys.argv[1]) as s:\n    s.setup()\n",
            dsn,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup() failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `scripts/create-monitoring-role.sql` with `psql -v ON_ERROR_STOP=1` as the superuser
/// and these `-v` variables; returns (exit code, output).
pub fn run_role_script(pg: &PgCluster, vars: &[(&str, &str)]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/create-monitoring-role.sql");
    let mut cmd = Command::new(pg.psql_path());
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
        .arg(pg.socket_dir())
        .args(["-p", &pg.port.to_string(), "-d", DBNAME]);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    let out = cmd.arg("-f").arg(script).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The superuser's DSN over TCP (the app's writes in scenarios that need no separate role).
pub fn superuser_url(pg: &PgCluster) -> String {
    format!(
        "postgresql://postgres:postgres@127.0.0.1:{}/{DBNAME}?sslmode=disable",
        pg.port
    )
}

/// Puts a checkpoint every `every` through `PostgresSaver` for at most `limit` seconds.
const WRITER_PY: &str = r#"
import sys, time
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.base import empty_checkpoint, create_checkpoint
dsn, thread, every, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
with PostgresSaver.from_conn_string(dsn) as saver:
    print("ready", flush=True)
    i, until = 0, time.monotonic() + limit
    while time.monotonic() < until:
        cfg = {"configurable": {"thread_id": thread.format(i % 3), "checkpoint_ns": ""}}
        saver.put(cfg, create_checkpoint(empty_checkpoint(), {}, i), {"source": "loop", "step": i}, {})
        i += 1
        time.sleep(every)
"#;

/// The app writing PostgreSQL: a child process that puts a checkpoint (threads named by the
/// `str.format` pattern `thread`) every `every`, for at most `limit` (bounded even when a test
/// fails), killed on drop.
pub struct PgWriter(AppProcess);

impl PgWriter {
    pub fn start(
        python: &Path,
        dsn: &str,
        thread: &str,
        every: Duration,
        limit: Duration,
    ) -> PgWriter {
        // The script stops itself after `limit`; drop kills it sooner.
        PgWriter(AppProcess::start_ready(
            Command::new(python)
                .args(["-c", WRITER_PY, dsn, thread])
                .arg(every.as_secs_f64().to_string())
                .arg(limit.as_secs_f64().to_string()),
            "the PostgresSaver writer",
        ))
    }
}

/// A child process of the app's library that says `ready` on stdout once it is set up, killed
/// on drop (its script also stops itself after its time limit).
pub struct AppProcess(Child);

impl AppProcess {
    /// Spawns `cmd` and waits for its `ready` line; panics with its stderr when it fails.
    pub fn start_ready(cmd: &mut Command, what: &str) -> AppProcess {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        AppProcess(child)
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The app's checkpointer pool: LangGraph's `AsyncPostgresSaver` on a psycopg
/// `AsyncConnectionPool` of `size` connections (min = max, all opened), named `application`, as
/// an app that builds its saver on a pool does; held for at most `limit`, killed on drop.
pub struct CheckpointerPool(AppProcess);

const POOL_PY: &str = r#"
import asyncio, sys
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

async def main():
    dsn, app, size, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    kw = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, "application_name": app}
    async with AsyncConnectionPool(dsn, min_size=size, max_size=size, kwargs=kw, open=False) as pool:
        await pool.wait(timeout=30)
        AsyncPostgresSaver(pool)
        print("ready", flush=True)
        await asyncio.sleep(limit)

asyncio.run(main())
"#;

impl CheckpointerPool {
    pub fn start(
        python: &Path,
        dsn: &str,
        application: &str,
        size: usize,
        limit: Duration,
    ) -> CheckpointerPool {
        CheckpointerPool(AppProcess::start_ready(
            Command::new(python)
                .args(["-c", POOL_PY, dsn, application])
                .arg(size.to_string())
                .arg(limit.as_secs_f64().to_string()),
            "the checkpointer pool",
        ))
    }
}
