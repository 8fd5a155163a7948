//! rose-agent: a sidecar that keeps the PostgreSQL-backed Rose app healthy.
//!
//! Data flow:
//! ```text
//! config ─► check::registry ─► scheduler (task per check, own interval, bounded)
//!                                   └─► snapshot::Store (watch<Arc<Snapshot>>)
//!                                          └─► server: /metrics (render), /readyz, /healthz
//! ```
//! A scrape reads the snapshot only; it never waits on the database.

pub mod alerting;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod dsn;
pub mod error;
pub mod exposition;
pub mod files;
pub mod findings;
pub mod leader;
pub mod pg;
pub mod reading;
pub mod render;
pub mod run;
pub mod scheduler;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod telemetry;
pub mod web;
