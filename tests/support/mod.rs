//! Test support: throwaway PostgreSQL clusters (initdb/pg_ctl on a free loopback port, run as
//! the unprivileged `postgres` OS user when the tests run as root), the agent binary as a child
//! process, and a plain HTTP GET. Everything is cleaned up on drop, also when a test fails.
#![allow(dead_code)]

pub mod browser;
pub mod clients;
pub mod flood;
pub mod langgraph;
pub mod langgraph_sqlite;
pub mod net;
pub mod prom;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Password of the monitoring role in every test cluster: distinctive, so a grep finds leaks.
pub const MONITOR_PASSWORD: &str = "Zq7-monitor-S3cret";
pub const MONITOR_USER: &str = "rose_monitor";
pub const DBNAME: &str = "rose";
pub const SCHEMA_SQL: &str = include_str!("../../scripts/sql/langgraph-schema.sql");

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Directory of the PostgreSQL server binaries: `ROSE_PG_BIN`, else Debian's 15.
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROSE_PG_BIN") {
        return PathBuf::from(p);
    }
    for v in ["15", "16", "17", "18", "14", "13"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("initdb").exists() {
            return p;
        }
    }
    panic!("no PostgreSQL server binaries: apt-get install postgresql-15, or set ROSE_PG_BIN")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Options for a test cluster.
#[derive(Clone)]
pub struct ClusterOpts {
    pub max_connections: u32,
    pub superuser_reserved: u32,
    pub pg_stat_statements: bool,
    pub schema: bool,
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            max_connections: 50,
            superuser_reserved: 3,
            pg_stat_statements: false,
            schema: true,
            extra_conf: vec![],
        }
    }
}

/// A throwaway PostgreSQL cluster.
pub struct PgCluster {
    pub port: u16,
    pub root: PathBuf,
    pub bin: PathBuf,
    as_postgres: bool,
    opts: ClusterOpts,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    pub fn start() -> PgCluster {
        PgCluster::start_with(ClusterOpts::default())
    }

    pub fn start_with(opts: ClusterOpts) -> PgCluster {
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "rose-test-pg-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst),
            Instant::now().elapsed().subsec_nanos()
        ));
        std::fs::create_dir_all(&root).unwrap();
        let mut c = PgCluster {
            port: 0,
            root,
            bin: pg_bin(),
            as_postgres,
            opts,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&c.root));
        }
        let pwfile = c.root.join("pw");
        std::fs::write(&pwfile, "postgres\n").unwrap();
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&pwfile));
        }
        c.as_user(c.bin.join("initdb"))
            .args([
                "-N",
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg("--pwfile")
            .arg(&pwfile)
            .arg("-D")
            .arg(c.data())
            .stdout(Stdio::null())
            .status()
            .map(|s| assert!(s.success(), "initdb failed"))
            .unwrap();
        for attempt in 0..5 {
            c.port = free_port();
            if c.pg_ctl_start() {
                break;
            }
            assert!(attempt < 4, "cluster did not start: {}", c.log());
        }
        c.psql_db("postgres", &format!("CREATE DATABASE {DBNAME}"));
        c.psql_db(
            "postgres",
            &format!(
                "CREATE ROLE {MONITOR_USER} LOGIN PASSWORD '{MONITOR_PASSWORD}' CONNECTION LIMIT 5; GRANT pg_monitor TO {MONITOR_USER};"
            ),
        );
        if c.opts.schema {
            c.psql(SCHEMA_SQL);
            c.psql(&format!(
                "GRANT SELECT ON checkpoint_migrations TO {MONITOR_USER}"
            ));
        }
        if c.opts.pg_stat_statements {
            c.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        }
        c
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    fn as_user(&self, program: impl AsRef<Path>) -> Command {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program.as_ref());
            c
        } else {
            Command::new(program.as_ref())
        };
        if let Some(lib) = bundled_lib_dir(&self.bin) {
            c.env("LD_LIBRARY_PATH", lib);
        }
        c
    }

    /// psql: the bin directory's own, else the system's (the npm packages ship no client).
    pub fn psql_path(&self) -> PathBuf {
        let own = self.bin.join("psql");
        if own.exists() {
            own
        } else {
            PathBuf::from("psql")
        }
    }

    fn pg_ctl_start(&self) -> bool {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={} -c superuser_reserved_connections={} -c fsync=off -c synchronous_commit=off",
            self.port,
            self.socket_dir().display(),
            self.opts.max_connections,
            self.opts.superuser_reserved
        );
        if self.opts.pg_stat_statements {
            opts.push_str(
                " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
            );
        }
        for e in &self.opts.extra_conf {
            opts.push_str(" -c ");
            opts.push_str(e);
        }
        self.as_user(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.root.join("log"))
            .args(["-w", "-t", "30", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops the server (fast shutdown: sessions are terminated).
    pub fn stop(&self) {
        let _ = self
            .as_user(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        assert!(self.pg_ctl_start(), "restart failed: {}", self.log());
    }

    /// Runs SQL as the superuser in the test database; returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db(DBNAME, sql)
    }

    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.psql_path())
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The monitoring role's URL (TCP, password authentication).
    pub fn monitor_url(&self) -> String {
        format!(
            "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{}/{DBNAME}?sslmode=disable",
            self.port
        )
    }

    /// Turns TLS on with this server certificate and key (copied into the cluster, owned by its
    /// OS user, the key private), and with `ca` as `ssl_ca_file` so that client certificates
    /// are requested and verified.
    pub fn enable_tls(&self, cert: &str, key: &str, ca: Option<&str>) {
        let (srv_cert, srv_key) = (self.root.join("server.crt"), self.root.join("server.key"));
        std::fs::copy(cert, &srv_cert).unwrap();
        std::fs::copy(key, &srv_key).unwrap();
        let mut files = vec![srv_cert.clone(), srv_key.clone()];
        if let Some(ca) = ca {
            let srv_ca = self.root.join("ca.crt");
            std::fs::copy(ca, &srv_ca).unwrap();
            files.push(srv_ca.clone());
            self.psql(&format!(
                "ALTER SYSTEM SET ssl_ca_file = '{}'",
                srv_ca.display()
            ));
        }
        if self.as_postgres {
            for p in &files {
                run(Command::new("chown").arg("postgres:postgres").arg(p));
            }
        }
        run(Command::new("chmod").arg("600").arg(&srv_key));
        self.psql(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            srv_cert.display()
        ));
        self.psql(&format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            srv_key.display()
        ));
        self.psql("ALTER SYSTEM SET ssl = on");
        self.psql("SELECT pg_reload_conf()");
        wait_for(Duration::from_secs(10), || self.psql("SHOW ssl") == "on").expect("ssl on");
    }

    /// Puts these lines first in pg_hba.conf and reloads.
    pub fn prepend_hba(&self, lines: &[&str]) {
        let path = self.data().join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{}\n{old}", lines.join("\n"))).unwrap();
        assert_eq!(self.psql("SELECT pg_reload_conf()"), "t");
    }

    /// Backends the agent holds (by application_name).
    pub fn agent_backends(&self) -> u32 {
        self.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rose-agent'")
            .parse()
            .unwrap()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .as_user(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn run(cmd: &mut Command) {
    let s = cmd.status().unwrap();
    assert!(s.success(), "{cmd:?} failed");
}

/// The agent binary running as a child process, its stdout/stderr captured to files.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `agent run` with these environment variables (and a free listen port).
    pub fn start(env: &[(&str, String)]) -> Agent {
        Agent::start_wrapped(&[], env)
    }

    /// Starts `agent run` under a wrapper command, e.g. `["prlimit", "--nofile=1024:1024"]`.
    /// `ROSE_TEST_AGENT_BIN` runs another build of the agent (to show a test fails on a build
    /// without a fix); by default the one cargo built.
    pub fn start_wrapped(wrapper: &[&str], env: &[(&str, String)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let bin = std::env::var("ROSE_TEST_AGENT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agent").to_owned());
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
        };
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(std::fs::File::create(dir.path().join("stdout")).unwrap());
        cmd.stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        let child = cmd.spawn().unwrap();
        let agent = Agent { child, port, dir };
        wait_for(Duration::from_secs(20), || {
            http_get(agent.port, "/healthz")
                .map(|r| r.0 == 200)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("agent did not serve /healthz: {}", agent.output()));
        agent
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.output()))
    }

    /// Parsed /metrics.
    pub fn metrics(&self) -> Metrics {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Everything the agent printed so far.
    pub fn output(&self) -> String {
        let r = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", r("stdout"), r("stderr"))
    }

    /// SIGTERM, then wait for exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.0 GET on loopback, bounded by a 5 s timeout.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_headers(port, path, &[])
}

/// [`http_get`] with extra request headers (e.g. `Authorization`).
pub fn http_get_headers(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `f` every 50 ms until it returns true or `limit` passes; returns the time it took.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A parsed exposition: `name{labels}` (labels as written) -> value.
#[derive(Debug, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            if let Some((k, v)) = line.rsplit_once(' ')
                && let Ok(v) = v.parse::<f64>()
            {
                m.insert(k.to_owned(), v);
            }
        }
        Metrics(m)
    }

    /// The value of an exact series key, e.g. `rose_pg_up` or `rose_pg_connections{state="idle"}`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    /// Metric names present.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.0
            .keys()
            .map(|k| k.split('{').next().unwrap_or(k).to_owned())
            .collect()
    }
}

/// Whether a tool is on PATH; in CI a missing tool is a failure, elsewhere a skip.
pub fn require_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{name} is required in CI (apt-get install it)"
        );
        eprintln!("skipping: {name} not installed");
    }
    found
}

/// The `lib` directory next to a bin directory that bundles its own libraries (the npm
/// `@embedded-postgres` packages), for LD_LIBRARY_PATH.
pub fn bundled_lib_dir(bin: &Path) -> Option<PathBuf> {
    let lib = bin.parent()?.join("lib");
    lib.join("libicuuc.so.60").exists().then_some(lib)
}

impl PgCluster {
    /// The server's major version (13..18).
    pub fn major(&self) -> u32 {
        self.psql("SHOW server_version_num")
            .parse::<u32>()
            .map(|v| v / 10_000)
            .unwrap_or(0)
    }

    /// A standby streaming from `primary` on its own port. Uses `pg_basebackup -R` when one
    /// that can talk to the primary exists (the bin directory's, else the system's of the same
    /// major); the npm packages ship none, so otherwise it makes a cold copy (primary stopped
    /// briefly) and writes the standby settings itself. Returns the method used.
    pub fn replica_of(primary: &PgCluster) -> (PgCluster, &'static str) {
        let as_postgres = primary.as_postgres;
        let root = std::env::temp_dir().join(format!(
            "rose-test-pg-{}-{}-replica",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst),
        ));
        std::fs::create_dir_all(&root).unwrap();
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&root));
        }
        let mut c = PgCluster {
            port: 0,
            root,
            bin: primary.bin.clone(),
            as_postgres,
            opts: ClusterOpts {
                schema: false,
                ..primary.opts.clone()
            },
        };
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres password=postgres application_name=rose_replica",
            primary.port
        );
        let basebackup = [
            primary.bin.join("pg_basebackup"),
            PathBuf::from(format!(
                "/usr/lib/postgresql/{}/bin/pg_basebackup",
                primary.major()
            )),
        ]
        .into_iter()
        .find(|p| p.exists());
        let method = match basebackup {
            Some(tool) => {
                let ok = c
                    .as_user(&tool)
                    .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                    .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
                    .arg(c.data())
                    .env("PGPASSWORD", "postgres")
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "pg_basebackup failed");
                "pg_basebackup -R"
            }
            None => {
                primary.stop();
                let ok = c
                    .as_user("cp")
                    .arg("-a")
                    .arg(primary.data())
                    .arg(c.data())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                primary.restart();
                assert!(ok, "copying the primary's data directory failed");
                let _ = std::fs::remove_file(c.data().join("postmaster.pid"));
                std::fs::write(c.data().join("standby.signal"), "").unwrap();
                if as_postgres {
                    run(Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(c.data().join("standby.signal")));
                }
                "cold copy (no pg_basebackup for this version)"
            }
        };
        // Either way: name the standby so pg_stat_replication shows it.
        let auto = c.data().join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&format!("\nprimary_conninfo = '{conninfo}'\n"));
        std::fs::write(&auto, conf).unwrap();
        for attempt in 0..5 {
            c.port = free_port();
            if c.pg_ctl_start() {
                break;
            }
            assert!(attempt < 4, "replica did not start: {}", c.log());
        }
        (c, method)
    }

    /// Runs SQL as the superuser on this (replica) server, in the test database.
    pub fn psql_ok(&self, sql: &str) -> bool {
        Command::new(self.psql_path())
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", DBNAME, "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The benchmark hook: `n` extra tables (each with a primary key index and a TOAST table)
    /// that no check should ever look at. Commits every 100 tables so the lock table
    /// (`max_locks_per_transaction`) is never exhausted.
    pub fn create_extra_tables(&self, n: u32) {
        self.psql(&format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP \
             EXECUTE format('CREATE TABLE bench_extra_%s (id int PRIMARY KEY, v text)', i); \
             IF i % 100 = 0 THEN COMMIT; END IF; \
             END LOOP; END $$"
        ));
    }

    /// A session held open in the background (see [`BgSession`]).
    pub fn session(&self, sql: &str) -> BgSession {
        BgSession::start(self, sql)
    }
}

/// A psql session running in the background as the superuser: it runs `sql` and then waits on
/// its open stdin, so a `BEGIN` stays open (idle in transaction), a lock stays held, or a long
/// statement keeps running. Killed on drop.
pub struct BgSession {
    child: Child,
    _stdin: Option<std::process::ChildStdin>,
}

impl BgSession {
    pub fn start(pg: &PgCluster, sql: &str) -> BgSession {
        let mut child = Command::new(pg.psql_path())
            .args(["-X", "-q", "-U", "postgres", "-h"])
            .arg(pg.socket_dir())
            .args(["-p", &pg.port.to_string(), "-d", DBNAME])
            .env("PGAPPNAME", "rose_test_session")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take();
        if let Some(w) = stdin.as_mut() {
            let _ = writeln!(w, "{sql}");
            let _ = w.flush();
        }
        BgSession {
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for BgSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Background `psql` sessions running SQL (e.g. `SELECT pg_sleep(60)`), killed on drop.
pub struct Sessions(pub Vec<Child>);

impl Sessions {
    /// Opens `n` sessions as `user` (over TCP with `password`, or as the superuser over the
    /// socket when `user` is `postgres`), each running `sql`.
    pub fn hold(pg: &PgCluster, user: &str, password: &str, n: usize, sql: &str) -> Sessions {
        let mut v = Vec::new();
        for _ in 0..n {
            let mut cmd = Command::new(pg.psql_path());
            cmd.args([
                "-X",
                "-q",
                "-U",
                user,
                "-d",
                DBNAME,
                "-p",
                &pg.port.to_string(),
                "-c",
                sql,
            ]);
            if user == "postgres" {
                cmd.arg("-h").arg(pg.socket_dir());
            } else {
                cmd.args(["-h", "127.0.0.1"]).env("PGPASSWORD", password);
            }
            v.push(
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        Sessions(v)
    }
}

impl Sessions {
    /// Whatever the sessions that already ended printed (their errors).
    pub fn errors(&mut self) -> String {
        let mut out = String::new();
        for c in &mut self.0 {
            if let Ok(Some(_)) = c.try_wait()
                && let Some(mut e) = c.stderr.take()
            {
                let _ = e.read_to_string(&mut out);
            }
        }
        out
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `agent diagnose --format json` with these variables; returns (exit code, JSON, all output).
pub fn diagnose(env: &[(&str, String)], extra_args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["diagnose", "--format", "json"])
        .args(extra_args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {all}"));
    (out.status.code().unwrap_or(-1), json, all)
}

/// Runs `agent diagnose` (text) with these variables; returns (exit code, all output).
pub fn diagnose_text(env: &[(&str, String)], extra_args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("diagnose")
        .args(extra_args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The finding codes of a diagnose report.
pub fn codes(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An HTTP receiver on loopback that records every request body (Alertmanager's webhook).
pub struct Webhook {
    pub port: u16,
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read headers, then Content-Length bytes of body.
                let body = loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body.to_owned());
                        }
                    }
                };
                if let Some(b) = body {
                    sink.lock().unwrap().push(b);
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Webhook { port, bodies }
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, with the
/// given configuration, clustering off, its own data directory; killed on drop.
pub struct Alertmanager {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start(config_yaml: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("am.yml"), config_yaml).unwrap();
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::fs::File::create(dir.path().join("log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        let am = Alertmanager { child, port, dir };
        wait_for(Duration::from_secs(15), || {
            http_get(am.port, "/-/ready")
                .map(|r| r.0 == 200)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| {
            panic!(
                "alertmanager not ready: {}",
                std::fs::read_to_string(am.dir.path().join("err")).unwrap_or_default()
            )
        });
        am
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a leaf certificate for 127.0.0.1/localhost made with the openssl CLI, in `dir`;
/// returns (ca, cert, key) paths, or `None` (a skip) when openssl is missing outside CI.
pub fn make_certs(dir: &Path) -> Option<(String, String, String)> {
    if !require_tool("openssl") {
        return None;
    }
    let p = |n: &str| dir.join(n).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (ca_key, ca_pem, leaf_key, leaf_csr, leaf_pem, ext) = (
        p("ca.key"),
        p("ca.pem"),
        p("leaf.key"),
        p("leaf.csr"),
        p("leaf.pem"),
        p("leaf.ext"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        "/CN=rose test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        &leaf_key,
        "-out",
        &leaf_csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    run(&[
        "x509",
        "-req",
        "-in",
        &leaf_csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &leaf_pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    Some((ca_pem, leaf_pem, leaf_key))
}

/// A client certificate for the user `cn`, signed by the CA [`make_certs`] made in `dir`;
/// returns (cert, key) paths (PKCS#8 PEM), or `None` (a skip) when openssl is missing.
pub fn make_client_cert(dir: &Path, cn: &str) -> Option<(String, String)> {
    make_client_cert_with_san(dir, cn, None)
}

/// [`make_client_cert`] with a subjectAltName (openssl syntax, e.g. `DNS:prometheus.example`).
pub fn make_client_cert_with_san(
    dir: &Path,
    cn: &str,
    san: Option<&str>,
) -> Option<(String, String)> {
    if !require_tool("openssl") {
        return None;
    }
    let p = |n: &str| dir.join(n).display().to_string();
    let (key, csr, pem, ext) = (
        p(&format!("{cn}.key")),
        p(&format!("{cn}.csr")),
        p(&format!("{cn}.pem")),
        p("client.ext"),
    );
    let san = san
        .map(|s| format!("subjectAltName={s}\n"))
        .unwrap_or_default();
    std::fs::write(
        &ext,
        format!("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n{san}"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let subj = format!("/CN={cn}");
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        &subj,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    Some((pem, key))
}

/// The stand-in app (crate `rose-standin`), in this process on loopback ports of its own; it
/// stops when dropped. `args` is its command line (`--mode slow`, `--serve v1`, ...).
pub struct Standin {
    pub port: u16,
    pub control: u16,
    _app: rose_standin::Background,
}

impl Standin {
    pub fn start(args: &[&str]) -> Standin {
        let cli = ["--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"];
        let args = rose_standin::Args::from_cli(cli.iter().chain(args).copied()).unwrap();
        let app = rose_standin::Background::start(args).expect("stand-in did not start");
        Standin {
            port: app.bound.app.port(),
            control: app.bound.control.expect("control port").port(),
            _app: app,
        }
    }

    /// Switches the stand-in through its control port (reachable in every mode).
    pub fn set(&self, query: &str) {
        let (code, body) = http_get(self.control, &format!("/_standin/set?{query}")).unwrap();
        assert_eq!(code, 200, "{body}");
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Environment for an agent that notices a fault within about a second.
pub fn fast_env(url: String) -> Vec<(&'static str, String)> {
    let mut env = vec![("AGENT_DATABASE_URL", url)];
    env.extend(fast_timing());
    env
}

/// The timing half of [`fast_env`] (1 s cycles, 400 ms connect and statement timeouts), for an
/// agent given its database another way.
pub fn fast_timing() -> Vec<(&'static str, String)> {
    vec![
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_CONNECT_TIMEOUT", "400ms".into()),
        ("AGENT_STATEMENT_TIMEOUT", "400ms".into()),
    ]
}

/// A scrape that must answer 200 within half a second (it reads only the snapshot).
pub fn prompt_scrape(agent: &Agent) -> Metrics {
    let t = Instant::now();
    let m = agent.metrics();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "scrape took {:?}",
        t.elapsed()
    );
    m
}

/// Pipes an exposition through `promtool check metrics` and asserts it finds nothing wrong.
pub fn promtool_check_metrics(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}
