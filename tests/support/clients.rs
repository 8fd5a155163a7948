//! Many cheap PostgreSQL sessions from the test process itself: tokio-postgres clients on the
//! superuser's Unix socket, driven by one small runtime, for scenarios with hundreds of sessions
//! (a `psql` process per session would cost the machine more than the server does). Dropping it
//! closes every connection; the cluster's own drop ends whatever is still running.

use std::sync::Arc;
use std::time::Duration;

use super::{DBNAME, PgCluster};

pub struct Clients {
    rt: tokio::runtime::Runtime,
    clients: Vec<Arc<tokio_postgres::Client>>,
}

impl Clients {
    /// Opens `n` sessions as the superuser with this `application_name`, each within 10 s.
    pub fn open(pg: &PgCluster, n: usize, application: &str) -> Clients {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(pg.socket_dir())
            .port(pg.port)
            .user("postgres")
            .dbname(DBNAME)
            .application_name(application)
            .connect_timeout(Duration::from_secs(10));
        let clients = rt.block_on(async {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let (client, conn) = tokio::time::timeout(
                    Duration::from_secs(10),
                    config.connect(tokio_postgres::NoTls),
                )
                .await
                .unwrap_or_else(|_| panic!("session {i}: connect timed out"))
                .unwrap_or_else(|e| panic!("session {i}: {e}"));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                v.push(Arc::new(client));
            }
            v
        });
        Clients { rt, clients }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Runs `sql` on session `i` and waits (at most 10 s) for it: `BEGIN; SELECT 1` leaves the
    /// session idle in a transaction.
    pub fn run(&self, i: usize, sql: &str) {
        let c = self.clients[i].clone();
        self.rt
            .block_on(async move {
                tokio::time::timeout(Duration::from_secs(10), c.batch_execute(sql)).await
            })
            .unwrap_or_else(|_| panic!("session {i}: {sql} timed out"))
            .unwrap_or_else(|e| panic!("session {i}: {sql}: {e}"));
    }

    /// Starts `sql` on session `i` without waiting: a `pg_sleep`, a statement waiting on a lock.
    pub fn start(&self, i: usize, sql: &str) {
        let c = self.clients[i].clone();
        let sql = sql.to_owned();
        self.rt.spawn(async move {
            let _ = c.batch_execute(&sql).await;
        });
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.clients.clear();
    }
}
