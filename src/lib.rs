//! rose-agent: a sidecar that keeps the PostgreSQL-backed Rose app healthy.
//!
//! Modules live on floors and import only from their own floor or below (docs/architecture.md;
//! `tests/floors.rs` keeps it true): 0 base (`dsn`, `error`, `files`), 1 vocabulary (`config`,
//! `catalog`, `findings::codes`, `cli`), 2 drivers (`pg`), 3 checks (`check`), 4 facts
//! (`snapshot`), 5 judgement (`findings`), 6 outputs (`reading`, `render`, `exposition`,
//! `alerting`, `server`, `web`, `telemetry`, `status`), 7 runtime (`run`, `scheduler`,
//! `leader`), 8 commands (`diagnose`, `status::client`, `main`).
//!
//! Data flow (each state has one writer):
//! ```text
//! config ─► check::registry ─► scheduler (task per check, own interval, bounded)
//!                                   └─► snapshot::Store (check outcomes only)
//!                                          ├─► findings loop: findings::evaluate (pure rules)
//!                                          │     └─► findings::state::Published (own channel)
//!                                          │           └─► alerting: Alertmanager push
//!                                          └─► reading::Sources (snapshot + findings + the
//!                                                self series: pusher, OTLP, leader, target,
//!                                                connection counts)
//!                                                ├─► server: /metrics (render), /findings,
//!                                                │           /, /status, /readyz, /healthz
//!                                                └─► telemetry: OTLP metrics (render samples)
//! ```
//! A scrape reads the snapshot and the channels beside it only; it never waits on the database.

// Visibility stays narrow (docs/architecture.md): an item that no test, fuzz target or `main`
// reaches is `pub(crate)`, and clippy `-D warnings` holds new code to it.
#![warn(unreachable_pub)]

pub mod alerting;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod dsn;
pub mod error;
pub mod exposition;
pub(crate) mod files;
pub mod findings;
pub mod leader;
pub mod pg;
pub mod reading;
pub mod render;
pub mod run;
pub mod scheduler;
pub mod server;
pub mod snapshot;
pub mod sqlite;
pub mod status;
pub mod telemetry;
pub mod web;
