//! The PostgreSQL checks, one module per check, and the helpers they share ([`util`]: bounded
//! JSON statements, version caches, growth history; [`json`]: the one-statement check shape).

pub mod activity;
pub(crate) mod archiver;
pub(crate) mod catalog_fingerprint;
pub mod checkpoint_threads;
pub(crate) mod checkpoints;
pub mod connection_budget;
pub mod connections;
pub(crate) mod connectivity;
pub(crate) mod database_size;
pub(crate) mod database_stats;
#[cfg(test)]
pub(crate) mod example;
pub(crate) mod json;
pub mod privileges;
pub mod replica;
pub(crate) mod replication;
pub mod schema;
pub mod statements;
pub mod table_sizes;
pub mod util;
