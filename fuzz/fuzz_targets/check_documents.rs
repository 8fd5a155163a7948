//! Fuzzes the decoding of the JSON documents the PostgreSQL checks' statements return, and the
//! pure functions that turn them into observations: a protocol error or a value, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rose_agent::check::pg_util::decode;
use rose_agent::check::{
    pg_activity, pg_connection_budget, pg_connections, pg_privileges, pg_replica, pg_schema,
    pg_statements, pg_table_sizes,
};
use rose_agent::config::Expectations;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let n = s.len() % 8;
    if let Ok(r) = decode::<pg_connections::Raw>(s, "connections") {
        let _ = pg_connections::from_raw(r, n);
    }
    if let Ok(r) = decode::<pg_activity::Raw>(s, "activity") {
        let _ = pg_activity::summarize(r, Duration::from_secs(2), n % 2 == 0);
    }
    if let Ok(r) = decode::<pg_privileges::Raw>(s, "privileges") {
        let _ = pg_privileges::from_raw(r);
    }
    if let Ok(r) = decode::<pg_replica::Raw>(s, "replica") {
        let _ = pg_replica::from_raw("127.0.0.1:5432/railway", r);
    }
    if let Ok(r) = decode::<pg_statements::RawStats>(s, "statements") {
        let _ = pg_statements::from_raw("public".into(), n % 2 == 0, r);
    }
    if let Ok(r) = decode::<Vec<pg_table_sizes::RawSize>>(s, "table sizes") {
        let _ = pg_table_sizes::from_raw(r);
    }
    if let Ok(r) = decode::<pg_schema::RawCatalog>(s, "schema") {
        let _ = pg_schema::detect_variant(&r, "public");
        let _ = pg_schema::evaluate(&Expectations::default(), &r);
    }
    if let Ok(r) = decode::<pg_connection_budget::Raw>(s, "budget") {
        let app = pg_connection_budget::AppPools {
            pool_size: n as u32 * 7,
            max_overflow: n as u32,
            instances: (s.len() % 5) as u32,
            checkpointer_pool_max_size: n as u32,
            plan: None,
        };
        let _ = pg_connection_budget::compute(&app, &r);
    }
});
