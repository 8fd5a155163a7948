//! Fuzzes the judgement of an app's health answer (any status, any bytes): no panic, and every
//! label value taken from the body is bounded and label-safe.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rose_agent::check::app_probe::{Exchange, MAX_SERVICES, judge};
use rose_agent::config::{Config, ProbeConfig};

fn probe() -> &'static ProbeConfig {
    static P: OnceLock<ProbeConfig> = OnceLock::new();
    P.get_or_init(|| {
        let env: HashMap<&str, &str> = [("APP_BASE_URL", "http://127.0.0.1:9")].into();
        Config::from_text(None, &env).expect("config").app.probes[0].clone()
    })
}

fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.+".contains(c))
}

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_le_bytes([*a, *b]) % 500, rest),
        _ => (200, data),
    };
    let ex = Exchange::Answer {
        status,
        body: body.to_vec(),
    };
    let v = judge(probe(), &ex, Duration::from_millis(5));
    if let Some(b) = &v.body {
        assert!(b.services.len() <= MAX_SERVICES);
        assert!(
            b.services
                .iter()
                .all(|s| safe(&s.name) && s.state.chars().count() <= 32)
        );
        assert!(b.version.as_deref().is_none_or(safe));
    }
    for e in &v.expectations {
        assert!(e.mismatched_keys.len() <= 16);
        assert!(e.actual.as_ref().is_none_or(|a| a.chars().count() <= 64));
    }
    assert!(!v.healthy || v.success);
});
