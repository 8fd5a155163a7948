//! Test support between the agent and PostgreSQL: a throwaway PgBouncer (Debian's, run as the
//! `postgres` OS user when the tests run as root) in front of a [`PgCluster`], and a loopback TCP
//! proxy that can add latency or freeze like a network blip. Both stop and clean up on drop,
//! also when a test fails.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{DBNAME, MONITOR_PASSWORD, MONITOR_USER, PgCluster, free_port, is_root, wait_for};

/// A PgBouncer in front of a cluster, listening on 127.0.0.1.
pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// `pool_mode` is `session` or `transaction`; `ignore_options` adds
    /// `ignore_startup_parameters = options` (what Zalando's operator ships). `None` when
    /// pgbouncer is not installed (see `require_tool`).
    pub fn start(
        pg: &PgCluster,
        pool_mode: &str,
        ignore_options: bool,
        pool_size: u32,
    ) -> Option<PgBouncer> {
        if !super::require_tool("pgbouncer") {
            return None;
        }
        let dir = pg.root.join(format!(
            "pgbouncer-{pool_mode}-{ignore_options}-{}",
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("users.txt"),
            format!("\"{MONITOR_USER}\" \"{MONITOR_PASSWORD}\"\n\"postgres\" \"postgres\"\n"),
        )
        .unwrap();
        let port = free_port();
        let ini = format!(
            "[databases]\n{DBNAME} = host=127.0.0.1 port={} dbname={DBNAME}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {}\npool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\nmax_client_conn = 50\n{}\
             logfile = {}\npidfile = {}\n",
            pg.port,
            dir.join("users.txt").display(),
            if ignore_options {
                "ignore_startup_parameters = options\n"
            } else {
                ""
            },
            dir.join("log").display(),
            dir.join("pid").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        let root = is_root();
        if root {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
        }
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "pgbouncer"]);
            c
        } else {
            Command::new("pgbouncer")
        };
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let b = PgBouncer { port, dir, child };
        assert!(
            wait_for(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok())
            .is_some(),
            "pgbouncer did not start: {}",
            b.log()
        );
        Some(b)
    }

    /// The monitoring role's URL through the pooler.
    pub fn monitor_url(&self) -> String {
        format!(
            "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{}/{DBNAME}?sslmode=disable",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to pgbouncer; kill the child we started, by its pid.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        if wait_for(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct ProxyState {
    stop: AtomicBool,
    frozen: AtomicBool,
    /// Added one-way delay per chunk, in ms.
    delay_ms: AtomicU64,
    /// The first [`RECORD_LIMIT`] bytes forwarded each way: [0] client to server, [1] back.
    recorded: [std::sync::Mutex<Vec<u8>>; 2],
}

/// Bytes [`Proxy`] keeps of each direction for [`Proxy::recorded`].
pub const RECORD_LIMIT: usize = 4 * 1024 * 1024;

/// A loopback TCP proxy to `127.0.0.1:upstream`. [`Proxy::freeze`] is a network blip as the
/// server sees it when the client's side is gone for good (its kernel dropped the connection
/// after `tcp_user_timeout`, or a NAT lost it): nothing is forwarded, and a connection that
/// lived through a freeze never forwards again nor passes its close on, so its server backend
/// stays open until the server itself gives up on it. New connections wait for the thaw.
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            stop: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            recorded: Default::default(),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let st = st.clone();
                        conns.push(std::thread::spawn(move || serve(client, upstream, st)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Proxy {
            port,
            state,
            accept: Some(accept),
        }
    }

    /// Adds `one_way` to every chunk in each direction (a round trip gains twice that).
    pub fn set_delay(&self, one_way: Duration) {
        self.state
            .delay_ms
            .store(one_way.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.state.frozen.store(false, Ordering::SeqCst);
    }

    /// What went over the wire so far (capped at [`RECORD_LIMIT`]): `to_server` false gives
    /// the server's answers (e.g. HTTP response headers and bodies as sent, compressed or not).
    pub fn recorded(&self, to_server: bool) -> Vec<u8> {
        self.state.recorded[usize::from(!to_server)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn serve(client: TcpStream, upstream: u16, st: Arc<ProxyState>) {
    while st.frozen.load(Ordering::SeqCst) {
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let lost = Arc::new(AtomicBool::new(false));
    let pumps = [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server.try_clone().unwrap(), client.try_clone().unwrap()),
    ]
    .into_iter()
    .enumerate()
    .map(|(dir, (from, to))| {
        let (st, lost) = (st.clone(), lost.clone());
        std::thread::spawn(move || pump(from, to, &st, &lost, dir))
    })
    .collect::<Vec<_>>();
    for p in pumps {
        let _ = p.join();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, st: &ProxyState, lost: &AtomicBool, dir: usize) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !st.stop.load(Ordering::SeqCst) {
        if st.frozen.load(Ordering::SeqCst) {
            lost.store(true, Ordering::SeqCst);
        }
        if lost.load(Ordering::SeqCst) {
            // Lost in the blip: keep both sockets open, forward nothing, pass no close on.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let r = from.read(&mut buf);
        if st.frozen.load(Ordering::SeqCst) {
            // Whatever arrived during the blip (data, a close) is lost with it.
            lost.store(true, Ordering::SeqCst);
            continue;
        }
        match r {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                let d = st.delay_ms.load(Ordering::SeqCst);
                if d > 0 {
                    std::thread::sleep(Duration::from_millis(d));
                }
                if st.frozen.load(Ordering::SeqCst) || lost.load(Ordering::SeqCst) {
                    lost.store(true, Ordering::SeqCst);
                    continue;
                }
                {
                    let mut rec = st.recorded[dir].lock().unwrap_or_else(|p| p.into_inner());
                    let room = RECORD_LIMIT.saturating_sub(rec.len()).min(n);
                    rec.extend_from_slice(&buf[..room]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
