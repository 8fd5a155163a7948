//! Fuzzes the decoding of the JSON documents the PostgreSQL checks' statements return, and the
//! pure functions that turn them into observations: a protocol error or a value, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rose_agent::check::pg;
use rose_agent::check::pg::util::decode;
use rose_agent::config::Expectations;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let n = s.len() % 8;
    if let Ok(r) = decode::<pg::connections::Raw>(s, "connections") {
        let _ = pg::connections::from_raw(r, n);
    }
    if let Ok(r) = decode::<pg::activity::Raw>(s, "activity") {
        let _ = pg::activity::summarize(r, Duration::from_secs(2), n % 2 == 0);
    }
    if let Ok(r) = decode::<pg::privileges::Raw>(s, "privileges") {
        let _ = pg::privileges::from_raw(r);
    }
    if let Ok(r) = decode::<pg::replica::Raw>(s, "replica") {
        let _ = pg::replica::from_raw("127.0.0.1:5432/railway", r);
    }
    if let Ok(r) = decode::<pg::statements::RawStats>(s, "statements") {
        let _ = pg::statements::from_raw("public".into(), n % 2 == 0, r);
    }
    if let Ok(r) = decode::<Vec<pg::table_sizes::RawSize>>(s, "table sizes") {
        let _ = pg::table_sizes::from_raw(r);
    }
    if let Ok(r) = decode::<pg::schema::RawCatalog>(s, "schema") {
        let _ = pg::schema::detect_variant(&r, "public");
        let _ = pg::schema::evaluate(&Expectations::default(), &r);
    }
    if let Ok(r) = decode::<pg::connection_budget::Raw>(s, "budget") {
        let app = pg::connection_budget::AppPools {
            pool_size: n as u32 * 7,
            max_overflow: n as u32,
            instances: (s.len() % 5) as u32,
            checkpointer_pool_max_size: n as u32,
            plan: None,
        };
        let _ = pg::connection_budget::compute(&app, &r);
    }
});
