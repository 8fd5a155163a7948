//! Fuzzes the configuration: a TOML file's text and the environment, validated together. Every
//! rejection names a key and says what is wrong; nothing panics.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use rose_agent::config::Config;

/// The variables the agent reads, fed from the input's lines after the first `\0`.
const VARS: &[&str] = &[
    "DATABASE_URL",
    "AGENT_DATABASE_URL",
    "FEATURE_DATABASE_TYPE",
    "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "AGENT_INTERVAL",
    "AGENT_LISTEN",
    "APP_BASE_URL",
    "AGENT_APP_INSTANCES",
    "AGENT_PLAN",
    "AGENT_STATEMENT_TIMEOUT",
    "AGENT_SLOW_QUERY_THRESHOLD",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_RESOURCE_ATTRIBUTES",
    "SHORT_TERM_MEMORY_DB_PATH",
    "AGENT_LOG_FORMAT",
];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env_text) = s.split_once('\0').unwrap_or((s, ""));
    let env: HashMap<&str, &str> = VARS.iter().copied().zip(env_text.split('\n')).collect();
    if let Err(e) = Config::from_text(Some((file, "agent.toml")), &env) {
        assert!(!e.0.is_empty());
        assert!(
            e.0.iter()
                .all(|p| !p.key.is_empty() && !p.message.is_empty())
        );
    }
});
